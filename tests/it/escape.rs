//! The escape suite: every way out of the allowlist we could think of,
//! each tried against the real `egret run` (or the real ruleset) in a
//! workload namespace, asserting that the attempt fails *fast* (a reset,
//! a 403 or EPERM well under a second, not a multi-second client timeout)
//! and leaves an event with the right reason.
//!
//! Item (issue 9) → test. Where an older test already proves an item
//! against `egret run` or the real ruleset it is named here instead of
//! repeated; `proxy::*` tests drive the same proxy code behind a test
//! redirect and are listed as extra cover.
//!
//! | # | attack | test |
//! |---|--------|------|
//! | 1 | allowed SNI sent to a foreign IP (v4, v6) | `escape_01_allowed_sni_sent_to_a_foreign_ip` (also `proxy::spoofed_destination_is_ip_mismatch`) |
//! | 2 | allowed Host sent to a foreign IP | `run::https_mode_allows_by_name_blocks_spoofing_and_other_names` (403 `ip-mismatch` + event) |
//! | 3 | Host switch on the second keep-alive request | `escape_03_host_switch_on_the_second_keep_alive_request` (also `proxy::every_request_on_a_kept_alive_connection_is_checked`, `proxy::pipelined_requests_answered_in_order_up_to_the_refused_one`) |
//! | 4 | absolute-form URI to another host | `escape_04_absolute_form_uri_to_another_host` (also `proxy::absolute_form_target_must_match_host`) |
//! | 5 | IPv6 to a non-allowed address: 80, 443, another port | `escape_05_ipv6_to_a_non_allowed_address` |
//! | 6 | QUIC / UDP 443 (HTTPS and strict DNS mode) | `escape_06_quic_udp_443` (also `nft::allowed_passes_blocked_is_refused_fast_and_logged`) |
//! | 7 | DoT 853, both modes | `escape_07_dot_853_in_both_modes` |
//! | 8 | DNS to an outside resolver, both modes | `escape_08_dns_to_an_outside_resolver_in_both_modes` |
//! | 9 | direct IP connection in strict DNS mode | `escape_09_direct_ip_in_strict_dns_mode` (also `nft::strict_dns_learned_addresses_expire_and_reload_revokes_their_flows`, `dns::strict_egress_only_learned_addresses_are_reachable_until_the_ttl`) |
//! | 10 | a TCP port other than 80/443 | `run::https_mode_allows_by_name_blocks_spoofing_and_other_names` (port 8000: < 2 s, `nflog.event` BLOCKED); v6 in `escape_05_ipv6_to_a_non_allowed_address` |
//! | 11 | UDP other than DNS (HTTPS and strict DNS mode) | `escape_11_udp_other_than_dns` |
//! | 12 | egret's own listener ports, from inside and from another host | `escape_12_egrets_own_listener_ports` (also `proxy::direct_connection_to_egret_is_refused`, `nft::listener_ports_take_connections_from_this_host_only`) |
//! | 13 | ClientHello without SNI, IP literal, malformed, truncated, byte by byte, > 16 KiB | `escape_13_bad_client_hellos` (also `proxy::hello_without_sni_is_blocked`, `proxy::hello_one_byte_at_a_time_is_allowed`, `proxy::hello_over_16_kib_is_allowed`) |
//! | 14 | slowloris on both proxies | `escape_14_slowloris_on_both_proxies` (cut at HEADER_TIMEOUT, which is a deadline, not an idle timer; also `proxy::silent_client_is_closed_after_header_timeout`) |
//! | 15 | 10,000 connections at once | `escape_15_ten_thousand_connections_at_once` (also `proxy::over_max_connections_is_reset_at_once`, `proxy::thousand_concurrent_connections_and_no_leaks`) |
//! | 16 | CAP_NET_RAW workload setting SO_MARK 0x1 or a guessed value | `nft::a_forged_mark_from_a_workload_with_net_raw_gets_nowhere` (0x1, 0x2a2a2a2a, 0x7fffffff), `nft::with_cgroup_v2_even_egrets_own_mark_is_useless_to_a_workload` (egret's real mark), `nft::random_marks_differ_per_start` |
//! | 17 | ICMP to non-allowed hosts | `escape_17_icmp_to_non_allowed_hosts` |
//! | 18 | a name allowed by `*.x` trying `x` | `escape_18_wildcard_does_not_allow_the_apex` |
//! | 19 | IDN/punycode and case tricks in SNI and Host | `escape_19_idn_punycode_and_case_tricks` |
//! | 20 | dashboard unreachable: filtering unaffected | `escape_20_dashboard_unreachable_filtering_unaffected` |
//! | 21 | a flow opened before egret starts; client ports reused across a reload | `nft::flows_from_before_the_rules_are_cut_inbound_still_answered` (real ruleset), `escape_21_client_port_reused_across_a_reload` |
//!
//! Round 2 (kernel paths), finding → test:
//!
//! | finding | test |
//! |---------|------|
//! | AF_XDP frames skip the netdev egress hook | `escape_43_frames_from_an_af_xdp_socket_do_not_leave` |
//! | the egress tag read off looped multicast/broadcast | `escape_40_the_egress_tag_is_not_readable_off_looped_multicast_or_broadcast` |
//! | ND/MLD from a process's raw socket | `escape_39_neighbour_discovery_and_mld_from_a_process_socket_stay_in` |
//! | nat output priority tied with the runtime's | `escape_38_a_runtime_nat_chain_at_dstnat_priority_does_not_take_port_53_first` |
//! | conntrack filled by local UDP pairs | `escape_42_local_udp_pairs_do_not_fill_the_conntrack_table` |
//! | many users in one container | `escape_41_many_users_in_one_container_are_one_client` |
//! Later rounds: `escape_44_forged_answers_from_a_loopback_upstream_are_never_served`
//! (forged UDP answers "from" Docker's 127.0.0.11 by an unprivileged
//! workload; loopback upstreams are asked over TCP).
//!
//!
//! Round 3: every attempt, held or not, finding → test (an `#[ignore]`d
//! test is an open finding: it fails until fixed).
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | GRE, IPIP, 6in4, SCTP, DCCP, proto 253, UDP-Lite, hand-made fragments (whole, first alone, later alone) to a forbidden host, HTTPS and strict DNS mode | CAP_NET_RAW (UDP-Lite: none) | held | `escape_45_other_ip_protocols_udp_lite_and_hand_made_fragments_stay_in` |
//! | IPv4-mapped IPv6 (`::ffff:a.b.c.d`) destinations on 80, 443, 7000, UDP; strict mode before and after a lookup | none | held | `escape_46_ipv4_mapped_ipv6_destinations_are_their_ipv4_selves` |
//! | TCP Fast Open: data in the SYN to a forbidden host (80, 443, 7000) | none | held | `escape_47_tcp_fast_open_data_in_the_syn_is_filtered_like_any_other` |
//! | an ICMP error quoting an allowed flow, sent to a forbidden host (RELATED smuggling), v4 and v6 | CAP_NET_RAW | held | `escape_48_icmp_errors_quoting_an_allowed_flow_carry_nothing_to_a_forbidden_host` |
//! | h2c prior knowledge, h2c upgrade answered `101` by the server | none | held | `escape_49_h2c_prior_knowledge_and_upgrade_never_leave_http_1_1_checking` |
//! | newline / ESC in SNI, Host and DNS names (log and event injection) | none | held | `escape_50_control_characters_in_names_never_forge_log_lines_or_events` |
//! | `GET /api/v1/logs` on the pod's loopback dashboard (deploy/pod.yaml) | none | **worked, fixed** (reads need the key or a session; `PUBLIC_READS` opts out) | `escape_51_a_workload_cannot_read_co_tenant_events_off_the_pods_dashboard` |
//! | squatting the loopback dashboard port before the dashboard | none | **worked, fixed** (the listener's uid must be `DASHBOARD_UID`'s) | `escape_52_a_squatter_on_the_dashboards_loopback_port_gets_no_key` |
//! | hop-by-hop / destination options headers before TCP and UDP to a forbidden v6 host | CAP_NET_RAW | held | `escape_53_ipv6_options_headers_do_not_hide_the_transport_from_the_rules` |
//! | egret's `/proc/PID/{environ,mem,maps}`, fd links, `PTRACE_ATTACH` (the dashboard key) | uid 0 without caps, uid 0 with the runtime's defaults, nobody | held | `escape_54_egrets_environment_and_memory_are_closed_to_a_root_workload` |
//! | flooding blocked UDP to spend the NFLOG rate limit (hiding others' blocked packets) | none | **worked, fixed** (the log is limited per socket owner, then in total) | `escape_55_one_client_flooding_blocked_packets_does_not_hide_anothers` |
//! | flooding egret's resolver with UDP queries | none | **worked, fixed** (a flooder past its rate and refusals is dropped unread; a client's forwarded backlog is capped) | `escape_56_one_client_flooding_dns_does_not_starve_another` |
//! | a burst of 1,500 slow allowed queries from one uid with `DNS_HARDENING=false`, another client's lookup meanwhile | none | **worked, fixed** (per-client backlogs served in turn) | `escape_56_one_clients_backlog_does_not_queue_ahead_of_another` |
//! | IPv4 options, short or lying TCP headers, 30 chained IPv6 options headers, a broken one, no next header: the NFLOG copy egret parses | CAP_NET_RAW | held (blocked, egret keeps logging) | `escape_57_strangely_shaped_blocked_packets_neither_leave_nor_upset_the_log_reader` |
//! | ARP / neighbour solicitations for forbidden on-link addresses as a covert channel, HTTPS and strict DNS mode | none, CAP_NET_RAW | held | `escape_59_no_neighbour_lookup_for_a_forbidden_on_link_address` |
//! | ECH, legacy ESNI, early data with a resumption PSK and 0-RTT bytes, TLS 1.2 renegotiation_info: the allowed SNI to a foreign IP | none | held | `escape_60_ech_esni_early_data_and_resumption_hellos_to_a_foreign_ip_are_refused` |
//! | DNS labels that print as a name under `*.allowed.test` (dotted, NUL, backslash) | none | held | `escape_61_dns_labels_that_read_as_an_allowed_suffix_are_not_forwarded` |
//! | allowed, blocked, allowed pipelined on one DNS-over-TCP connection | none | held | `escape_62_every_query_pipelined_on_one_dns_tcp_connection_is_checked` |
//! | `Content-Length: <NBSP>40` / `Transfer-Encoding: <U+2003>chunked` smuggling a request past the Host check to a digits-only server | none | **worked, fixed** (OWS trimming only) | `escape_63_framing_headers_with_unicode_spaces_cannot_smuggle_a_request` |
//! | bare-LF line ends: Host allowed.test for egret, the body's `Host: blocked.test` for a CRLF-only server | none | **worked, fixed** (CRLF line ends only) | `escape_64_bare_lf_line_ends_cannot_show_the_server_another_host` |
//! | egret's marks, egress tag or dashboard key in `/metrics`, `/health`, 403 bodies, events | none | held | `escape_65_no_mark_tag_or_key_in_metrics_health_refusals_or_events` |
//! | TLS hellos naming `<63-byte label>.allowed.test` at a foreign IP, 400 distinct names, with `DNS_IN_HTTPS_MODE` and the hardening on: the proxy's check lookup asks the upstream for each | none | **worked, fixed** (the check's lookups pass the DNS server's hardening first) | `escape_66_sni_names_do_not_carry_a_dns_tunnel_past_the_hardening` |
//! | 8 hellos naming short distinct names under `*.allowed.test` with `DNS_ZONE_BUDGET=5`, then a query for a 9th to egret's DNS server | none | **worked, fixed** (one budget for the check's lookups and the queries) | `escape_66_sni_names_spend_the_dns_servers_zone_budget` |
//! | an allowed name's AAAA `::ffff:<forbidden v4>` in strict DNS mode, then IPv4 and mapped connections to it | none | held (served, opens nothing) | `escape_67_an_ipv4_mapped_aaaa_answer_opens_no_ipv4_address_in_strict_mode` |
//! | 1,000 idle connections held to the pod's loopback dashboard while egret ships | none | held | `escape_68_idle_connections_to_the_pods_dashboard_do_not_stop_egrets_events` |
//! | 200 UDP queries a second for 5 s (4x DNS_RATE_QPS), a co-tenant's lookups meanwhile | none | **worked, fixed** (UDP askers' owners from `sock_diag`) | `escape_58_one_clients_dns_rate_limit_is_not_another_clients` |
//! | 1,100 idle connections from one client under a hard RLIMIT_NOFILE of 1024 (MAX_CONNECTIONS and the share count connections, not descriptors) | none | **worked, fixed** (a second fair admission counts descriptors, one per accepted connection and one more before upstream, of RLIMIT_NOFILE − 256; accept's EMFILE backs off) | `escape_69_one_client_cannot_spend_egrets_file_descriptors` |
//!
//! Round 4:
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | one blocked datagram from each of 4,096 uids (seteuid around socket()) fills `log_owners`; a new owner's blocked packets afterwards | CAP_SETUID (runtime default) | **worked, fixed** (an owner the full set cannot take shares the 20/s fallback instead of going unlogged) | `escape_70_filling_the_log_owner_set_does_not_hide_a_new_owners_blocked_packets` |
//! | 16 uids each past its 20/s, together past the shared 200/s; one co-tenant datagram meanwhile | CAP_SETUID | held (twice) | `escape_71_a_flood_from_many_uids_does_not_hide_another_owners_blocked_packets` |
//! | names next to `al*ed.test` and `/x[0-9]+\.allowed\.test/` (empty star, anchors, case, trailing dots, ports, `_`, `%`, punycode, non-ASCII digit) in Host, SNI and DNS | none | held | `escape_72_glob_and_regex_entries_cover_only_their_names_in_host_sni_and_dns` |
//! | 253-character near-miss names against 2,000 many-star globs and 200 `(a\|aa\|a-)+` regexes | none | held (60 refusals in 0.43 s) | `escape_73_pathological_names_against_many_star_and_regex_entries_are_answered_fast` |
//!
//! Round 5:
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | 1,000 request heads from one uid, each naming a fresh `h<i>.allowed.test`, replaced as refused, upstream 0.9 s an answer, RLIMIT_NOFILE 1024: each check lookup opens a socket beside the connection's one ticket | none | **worked, fixed** (a lookup that goes upstream holds one of the client's descriptor tickets for its socket, or the connection is refused with `limit`) | `escape_74_check_lookups_in_flight_do_not_run_egret_out_of_descriptors` |
//! | a UDP query flood from a fresh socket per query, closed once sent (a `sock_diag` miss per datagram, owner unknown), then from 3,000 sockets round-robin | none | **worked, fixed** (the co-tenant answered 2 of 4; the 3,000-socket flood lost one of 4 in one run of three; now the kernel drops each uid's DNS past 1,000/s in its own `sendto`, owner lookups go over one kept `sock_diag` socket within a budget of new ports a second, the owner table evicts rather than clears: 4 of 4 both ways, also beside two busy loops) | `escape_75_a_dns_flood_from_many_source_ports_does_not_starve_another_client` |
//! | `DNS_ZONE_BUDGET=5` spent, then the names and new ones in case, trailing-dot and port variants in SNI and Host | none | held (no new name reaches the upstream) | `escape_76_case_dot_and_port_variants_of_spent_names_are_not_looked_up_again` |
//! | binding the dashboard port on the pod's eth0 address or `0.0.0.0` first, egret's `DASHBOARD_HOST` naming that address | none | **worked, fixed** (every address of egret's namespace, and the address the connect reached, is checked against `DASHBOARD_UID`) | `escape_77_a_squatter_on_a_local_non_loopback_dashboard_address_gets_no_key` |
//! | reading the pod's dashboard with empty, prefix or doubled keys, Basic / bare bearer, forged cookies, HEAD, `Last-Event-ID`, a query-string key, forward-auth headers, `/login` with an empty or short key | none | held | `escape_78_no_header_method_or_sign_in_trick_reads_the_pods_dashboard_without_the_key` |
//! | a UDP flood of `huge.allowed.test` TXT (always truncated, so each allowed one is fetched again over TCP, at most 128 at once for all clients), a co-tenant's `medium.allowed.test` TXT (also fetched over TCP) meanwhile, hardening on | none | **worked intermittently, fixed** (one of the co-tenant's four lookups got no answer and left no event in 4 of 8 runs; escape_56's A flood: 4/4 in 3 of 3. The lost query never reached egret: the kernel dropped 25,000-68,000 of the flood's datagrams per run at egret's full listener, whose default 208 KiB buffer holds ~270 of them, and the co-tenant's with them. Now the kernel's per-uid limit keeps the flood out (no listener drops), the listener buffer is 4 MiB, and TCP retries are a fair share per client; the test also wants an event per lookup) | `escape_79_one_clients_truncated_answers_do_not_take_every_tcp_retry` |
//! | `DNS_HARDENING=false`: 7 s of allowed.test A from one socket as fast as it sends, a co-tenant's lookups meanwhile | none | **worked, fixed** (in 3 of 3 runs the co-tenant's first one or two of four lookups got no answer and no event, the next took 1-2 s; only the hardening's rate dropped a flooder's datagrams unread. Now the kernel's per-uid limit holds whatever the hardening: 4 of 4 within 1.2 s) | `escape_80_without_the_hardening_a_sustained_dns_flood_does_not_starve_another_client` |
//! | relay mode: six IPv6 addresses of one /64 each holding a slot with a trickled request body, `MAX_CONNECTIONS=3` | remote client | held | `relay::attack_many_addresses_of_one_64_and_a_trickled_body_hold_no_other_clients_slot` |//!
//!
//! Round 6 (default allow with a denylist, names with ports, the fleet):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | a denylisted IPv4 address by its NAT64 (`64:ff9b::a.b.c.d`) and IPv4-translated (`::ffff:0:a.b.c.d`) forms, TCP and UDP on a port other than 80/443 | none | worked, fixed (a `denylist.ips` IPv4 entry, bare or with ports, is written under the IPv4-translated, NAT64 well-known and local-use /96s in `denied6`/`denied_ports6`, and `Policy::decide` denies those forms naming the IPv4 entry) | `escape_81_nat64_and_translated_forms_of_a_denylisted_ipv4_are_denylisted` |
//! | an ICMP error quoting a named-port flow (its conntrack stamp) sent to another host | CAP_NET_RAW | held | `escape_82_icmp_errors_quoting_a_named_port_flow_do_not_ride_its_stamp` |
//! | `alias.test` CNAME to the denylisted `evil.test`: DNS mode under default allow, strict DNS mode under `*.test` minus `evil.test` | none | worked, fixed (the resolver judges every CNAME/DNAME target of an answer: a denylisted link makes it NXDOMAIN, reason `denylisted`, the note naming the link, before anything is learned) | `escape_83_a_cname_chain_ending_at_a_denylisted_name_is_not_served` |
//! | a denylisted Host in case, trailing-dot, port, double-dot, leading-dot, percent, userinfo, tab, fullwidth-dot forms; two Host headers, a Host list, absolute form, HTTP/1.0 without Host, CONNECT; SNI variants; a hello without SNI | none | held | `escape_84_denylisted_host_and_sni_variants_under_the_default_allow` |
//! | keeping a named-port connection open across a reload that removes the name | none | held (cut; a new one refused) | `escape_85_a_named_port_flow_does_not_outlive_a_reload_that_removes_the_name` |
//! | hand-made fragments (whole, first, later alone) to a denylisted address and to a denylisted UDP port, GRE, SCTP, proto 253, UDP-Lite to a denylisted address | CAP_NET_RAW (UDP-Lite: none) | held | `escape_86_fragments_and_other_protocols_to_denylisted_addresses_and_ports_stay_in` |
//! | DNS mode, default allow: the denylisted name in upper and mixed case, types A, AAAA, TXT, MX, CNAME, ANY, HTTPS, SVCB; behind an allowed first question | none | held | `escape_87_denylisted_name_variants_and_query_shapes_in_dns_mode` |
//! | a denylist entry written `::ffff:a.b.c.d`, then TCP/UDP to a.b.c.d and to its mapped form | none | worked, fixed (an IPv4-mapped entry, /96 or longer, is parsed as its IPv4 block in both lists, bare or with ports; `egret check` prints the IPv4 form and warns) | `escape_88_a_denylist_entry_written_as_an_ipv4_mapped_address_denies_its_ipv4_self` |
//! | default allow: the denylisted Host pipelined, and after a pause, behind an allowed one on one connection | none | held | `escape_89_a_denylisted_host_behind_an_allowed_one_on_a_kept_alive_connection` |
//! | strict DNS mode: `alias.test` (allowed) CNAME to `evil.test`, a name with ports (`tcp/evil.test:7001`); then TCP 7000 to evil.test's address | none | worked, fixed (an answer whose chain leads through a name with ports not otherwise allowed opens its addresses on that name's ports only, not on every port) | `escape_90_a_cname_to_a_name_with_ports_does_not_open_its_address_on_every_port` |
//! | an agent key's heartbeat naming another agent (hostname, agent, name) to hide its degraded state, markup in every text field | agent key | held (stored under the key's name; JSON with the CSP) | `fleet::attack_an_agent_key_cannot_beat_for_another_agent_or_inject_into_the_agents_view` |
//! | default allow, .3 denylisted: an ICMP error quoting an allowed flow to .2 sent to .3, and a ping to .3, v4 and v6 | CAP_NET_RAW | held | `escape_91_icmp_errors_and_pings_to_a_denylisted_host_under_the_default_allow` |
//! | default allow, `blocked.test` denylisted by name: a QUIC v1 Initial-shaped datagram naming it, UDP 443 to its address (control: TCP 443 with that SNI refused) | none | worked, fixed (HTTPS mode under the default allow with denylisted names refuses UDP 443 with port unreachable, after the allowlist's accepts, so clients fall back to TCP 443 and its SNI check; the README's limit says what remains) | `escape_92_quic_to_a_denylisted_name_under_the_default_allow` |
//! | an agent key posting 250 entries with `LOG_RETENTION` at 200: another agent's entry | agent key | **worked, fixed** (the row limit evicts the oldest entries of the agents holding the most first: `store::eviction_plan`) | `fleet::attack_an_agent_key_cannot_push_another_agents_events_out_of_the_store` |
//! | SQL in `/api/v1/aggregates` `agent`, `action`, `by`, `top`, `window` | API key | held (400, or bound values matching nothing) | `fleet::attack_aggregates_parameters_carry_no_sql` |
//! | an agent key posting an event dated 2099 | agent key | **worked, fixed** (an event time more than 60 s ahead of its arrival is stored as the arrival plus 60 s) | `fleet::attack_an_agent_key_cannot_date_events_into_every_future_window` |
//! | one uid flooding blocked datagrams for 1 s: how many are logged (found while fixing escape_56: a lookup in a set whose elements carry a `limit` spends it again) | none | **worked, fixed** (138 logged, the shared bucket taking the excess; 69 with `log_known` asked instead) | `escape_93_an_owner_past_its_log_limit_does_not_spend_the_shared_bucket` |
//!
//! Round 7 (spreading over uids; the kernel's per-uid meters):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | one port-53 datagram under each of 4,096 uids fills `dns_known`/`dns_owners`; 8 more uids flood port 53 (the shared bucket); a co-tenant not yet in the meter asks meanwhile (controls: uid 1000, in the meter, 4/4; the new owner with the meter full and no flood, 4/4) | CAP_SETUID (runtime default) | **worked, open** (the new owner answered 0 of 4, then 2 of 4 in a later run, each lost lookup a 2 s timeout: dropped in the shared kernel bucket; failed in all three runs) | `escape_94_a_full_dns_owner_meter_does_not_put_a_new_co_tenant_in_a_flooded_bucket` (ignored) |
//! | a fresh socket per datagram, each under the next of 16 uids (each within the kernel's 1,000/s, together about 18,000 new source ports a second past the 4,000 owner lookups); a co-tenant's digs, each from a new port (control: 3 uids, 4/4) | CAP_SETUID | **worked, open** (3 of 4, then 2 of 4 answered; 0 datagrams lost at egret's socket, so dropped unread past the lookup budget) | `escape_95_a_fresh_socket_flood_spread_over_uids_does_not_spend_another_clients_owner_lookups` (ignored) |
//! | `log_known`/`log_owners` filled by 4,096 uids, then 8 more uids flooding blocked datagrams; one blocked datagram from a new owner (control: logged with no flood) | CAP_SETUID | **worked, open** (not logged; a case of the README's "the total remains shared" limit) | `escape_96_a_full_log_owner_meter_and_a_flood_from_uids_past_it_do_not_hide_a_new_owner` (ignored) |
//! | HTTPS mode, `DNS_IN_HTTPS_MODE=true`, RLIMIT_NOFILE 1024: one container (own cgroup) holding 1,100 idle proxy connections, 130 trickled DNS-over-TCP connections and a flood of always-truncated queries to a 2 s upstream (TCP re-fetches); another container's three requests | uid 0, no capabilities | held (egret at 766 descriptors; 200, 200, 200) | `escape_97_dns_tcp_clients_and_retries_do_not_run_https_mode_out_of_descriptors` |
//! | escape_83's `alias.test` CNAME denylisted `evil.test` (DNS mode, default allow) over DNS-over-TCP, with the DO bit, ANY over UDP and TCP, CNAME over TCP | none | held | `escape_98_a_cname_chain_to_a_denylisted_name_over_tcp_and_in_other_query_types` |
//! | 16 children, each under its own uid, each sending fresh allowed names from one socket as fast as it can (0.3 s upstream); a co-tenant's lookups meanwhile | CAP_SETUID | held with the attacker in a cgroup of its own (4/4, slowest 0.39 s); **worked** where the cgroup tells nothing (`EGRET_IT_99_CGROUP=0`: 1-2 of 4, SERVFAIL `overloaded` once 16 uids' backlogs fill the 2,048 shared, and 7,800-29,000 datagrams lost at the listener) | `escape_99_allowed_query_floods_from_many_uids_inside_the_meter_do_not_starve_a_co_tenant` |
//!
//! Round 8 (the chain judged wherever egret resolves; remote unblock):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | HTTPS mode, default allow, `evil.test` denylisted: `long.test` leads through 16 CNAMEs, then `evil.test`; a request for it sent to evil.test's address (controls: evil.test and the one-link alias.test refused) | none | worked (200: the check lookup's cache kept 16 links per name, the 17th never judged); **fixed**: a chain of more than 16 links is refused whole under a denylist of names | `escape_160_a_chain_longer_than_the_kept_links_hides_its_denylisted_end` |
//! | strict DNS mode, `*.test` allowed: long.test (16 links, then evil.test) answered and learned; a reload denylists evil.test (controls: escape_151's one link holds; long.test asked again is refused) | none | worked (the learned replay kept 16 links per name: the address came back); **fixed** as escape_160 | `escape_162_a_reload_that_denylists_the_seventeenth_link_does_not_replay_its_address` |
//! | `tcp/alias.test:7000` allowed, alias.test CNAME evil.test; a reload denylists evil.test; TCP 7000 to evil.test's address, HTTPS and strict DNS mode (control: a fresh start opens nothing) | none | worked (both modes: the named-ports replay put the old answer back without its chain); **fixed**: `named::Opened` keeps each name's chain (`dns::filter::Chains`) and the replay judges it | `escape_161_a_reload_that_denylists_a_link_does_not_replay_a_named_port` |
//! | HTTPS mode, default allow: upper.test CNAME `EVIL.TEST.` (upper case, trailing dot), requested as upper.test, `UPPER.TEST.`, `Upper.Test` to evil.test's address | none | held (refused `denylisted`, the note naming evil.test) | `escape_163_a_link_in_upper_case_with_its_dot_is_the_denylisted_name` |
//! | remote unblock: `UNBLOCK_FILE` in a directory the workload can write; it writes `*` with `force`, the operator reloads for another reason | uid 65534 | worked (applied, no unblock event); **fixed**: egret reads `UNBLOCK_FILE` only when it is a regular file of its own user that nobody else may write | `unblock::attack_an_unblock_file_the_workload_wrote_is_not_applied_by_the_next_reload` |
//! | remote unblock: `/.*/`, `/.+/`, `*.*` without `force` (control: `*` refused) | API key | worked (201, and the agent's check accepted them); **fixed**: any regex, and a wildcard with no fixed label, needs `force` | `unblock::attack_an_entry_matching_every_name_needs_force_however_it_is_written` |
//! | remote unblock: write `UNBLOCK_FILE`, stage `UNBLOCK_FILE.tmp` beside it, rename a file over it, where the directory and file are root's (default umask) | uid 65534 | held (EACCES each) | `unblock::attack_a_workload_cannot_write_an_unblock_file_egret_made` |
//! | remote unblock: a kept-alive connection opened under a 4 s name unblock, its second request 2 s after the expiry | none | held (the expiry's reload refuses it; 1 of 2 served) | `unblock::attack_a_connection_opened_under_an_unblock_does_not_outlive_its_until` |
//!
//! Round 9 (read from the code; its attack window was lost to tool errors):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | strict DNS mode, `*.test` allowed: 300 first answers, each a CNAME to evil.test, so one of them is the 256th learned answer, which triggers the prune; a reload denylists evil.test | none | worked (the prune ran between recording the answer's chain and its address, and forgot the chain: the address came back); **fixed**: prune first, then record | `escape_170_the_answer_that_triggers_the_learned_prune_keeps_its_chain` (also `dns::learn::tests::the_answer_that_prunes_keeps_its_chain`) |
//!
//! Round 10 (CNAME/DNAME chains and what a reload replays):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | CNAME to a name under denylisted `*.evil.test` whose first label is no host name label (`x!`, `*`, `-x`, `x y`, `x\0`), dns, dns-strict and https modes (control: `x.evil.test` refused) | none | worked (`denied_in` judged such a link `invalid-name`, not denylisted: served and learned); **fixed**: under a denylist of names a link egret cannot read is refused | `escape_171_a_link_under_a_denylisted_zone_in_a_label_the_policy_cannot_read` |
//! | the same link learned, then a reload denylisting `*.evil.test` | none | worked (replayed); **fixed** as escape_171 | `escape_172_a_reload_replays_an_address_learned_through_an_unreadable_link` |
//! | a reload during a slow HTTPS-mode refresh of `tcp/alias.test:7000` | controls the alias zone's speed | worked (the refresher judged by the policy read before the lookup); **fixed**: judged and recorded under the policy in force when the answer is there, under the lock a reload holds from its swap to its replay | `escape_173_a_reload_during_a_slow_refresh_of_a_name_with_ports` |
//! | strict DNS, three processes asking alias.test while a reload denylists evil.test | uid 65534 | worked (an answer judged under the old policy was learned into the new ruleset between the apply and the swap); **fixed**: a reload holds the learner from before the apply to after the replay, and the learner judges the chain again under the policy in force | `escape_174_answers_in_flight_while_a_reload_swaps_the_policy_are_learned_into_the_new_ruleset` |
//! | the same window with the hardening on, and for a name the reload drops | uid 65534 | worked for the denylisted link, held for the dropped name; **fixed** as escape_174 | `escape_175_the_in_flight_reload_window_with_the_hardening_on_and_for_a_revoked_name` |
//! | DNAME into a denylisted zone: with the synthesised CNAME, alone, unreadable; alone with only `*.evil.test` denylisted | controls the upstream | held but the last (the question rewritten under the DNAME target was never judged); **fixed**: the chain holds the names a DNAME rewrites | `escape_176_dname_answers_into_a_denylisted_zone` |
//! | a chain that changes between lookups (clean, evil, clean), then a reload | none | held | `escape_177_a_chain_that_changes_between_lookups_then_a_reload` |
//! | a TLS connection open with SNI alias.test to evil.test's address when a reload denylists evil.test | none | worked (the revocation judged name and address only); **fixed**: a reload also cuts connections whose name's recorded chain it denylists | `escape_178_an_open_connection_through_a_link_a_reload_denylists` |
//! | an HTTPS record whose target name is in the denylisted zone, with an ipv4hint, strict DNS | controls the alias zone | worked (the hint served and learned); **fixed**: HTTPS/SVCB target names are links | `escape_179_an_https_record_whose_target_name_is_in_a_denylisted_zone` |
//! | a reload adds `tcp/evil.test:7001` while alias.test (CNAME evil.test) is learned | none | worked (replayed on every port; a fresh answer opens 7001 only); **fixed**: the replay drops a name whose chain now leads through a name with ports | `escape_180_a_reload_that_gives_a_link_ports_replays_the_alias_on_every_port` |
//! | one address shared by a named-port entry and a tainted alias; a reload that adds ports and denylists the link | none | held | `escape_181_a_shared_address_and_a_reload_that_adds_ports_and_denylists_the_link` |
//! | HTTPS mode with `DNS_IN_HTTPS_MODE`, names with ports, then a reload | none | held | `escape_182_https_mode_with_its_dns_listener_names_with_ports_and_a_reload` |
//! | a reload during a slow HTTPS check lookup for alias.test to evil.test's address | controls the alias zone's speed | worked (200: the chain judged by the connection's old policy, the re-check after registering asked name and address only); **fixed**: that re-check judges the recorded chain under the policy in force | `escape_183_a_reload_during_a_slow_check_lookup_through_the_link_it_denylists` |
//! | IDN forms of a denylisted link (A-label, upper case with the root dot, below it) | none | held | `escape_184_idn_and_escaped_forms_of_a_denylisted_link` |
//! | the in-flight reload window on the named-port path | uid 65534 | worked; **fixed** as escape_174 | `escape_185_the_in_flight_reload_window_for_a_name_with_ports` |
//! | the kept-links cap merged over three answers, evil.test as an 18th link | none | held | `escape_186_the_kept_links_cap_merged_over_several_answers` |
//! | a kept-alive HTTP connection, a reload denylisting the link, a second request | none | held | `escape_187_a_kept_alive_http_connection_through_a_link_a_reload_denylists` |
//!
//! Round 11 (against round 10's fixes):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | DNAMEs listed in an order the rewrite did not follow (a DNAME chain backwards; a DNAME before the CNAME target it moves), `*.evil.test` denylisted; dns, dns-strict, https | none | worked (served, learned, passed by the check); **fixed**: every DNAME moves every name to a fixpoint, and every record's owner is a link | `escape_190_dname_records_in_an_order_the_rewrite_does_not_follow` |
//! | the same answers learned, then a reload denylisting `*.evil.test` | none | worked (replayed); **fixed** as escape_190 | `escape_191_a_reload_replays_an_address_learned_through_dnames_out_of_order` |
//! | the same answers for a name with ports in HTTPS mode | none | worked (the refresher opened .3:7000); **fixed** as escape_190 | `escape_192_a_name_with_ports_whose_dnames_come_out_of_order_in_https_mode` |
//! | an open TLS connection for alias.test (TTL 1) after 10,100 lookups of other names pushed its chain out of the check cache, then a reload denylisting evil.test | none | worked (kept flowing); **fixed**: a tracked connection keeps the chain it was allowed with | `escape_193_an_open_connection_whose_chain_the_check_cache_forgot` |
//! | a root-owned DNAME `. DNAME evil.test.` | none | worked (served and learned); **fixed**: a root owner moves every name | `escape_194_a_dname_owned_by_the_root` |
//! | 600,000 learned addresses (250 TCP answers of 2,400 A records), then the operator reloads | none | worked (every tenant's DNS waited 5.7 s, debug build); **fixed**: the replay judges without the learner's lock and installs a chunk per hold (worst co-tenant wait 0.17 s) | `escape_195_many_learned_addresses_hold_the_learner_through_a_reload` |
//! | HTTPS records in an A answer (ServiceMode, AliasMode) with target `x.evil.test`; an A record owned by `x.evil.test` that nothing leads to | controls the alias zone | held for the first two; the third worked; **fixed**: every record's owner is a link | `escape_196_https_records_in_an_a_answer_and_a_record_owned_off_the_chain` |
//! | 8 parallel loops of the big answers against a co-tenant's DNS, no reload | none | held (worst 388 ms) | `escape_197_big_answers_keep_the_learner_busy_for_a_co_tenant` |
//! | an upgraded WebSocket through alias.test, then a reload denylisting evil.test | none | held (cut) | `escape_198_an_upgraded_websocket_through_a_link_a_reload_denylists` |
//!
//! Round 12 (against round 11's fixes):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | strict DNS, no denylist of names, `tcp/evil.test:7001` allowed: evil.test as a chain's 18th link, or after 17 TXT records of other owners | controls the upstream | worked (.3 opened on every port: the link with ports was past the kept links); **fixed**: an over-long chain is refused when the policy has names with ports too | `escape_200_a_chain_past_the_kept_links_hides_a_link_with_ports_when_nothing_is_denylisted` |
//! | a reload from `alias.test, long.test` adding `tcp/evil.test:7001` (long.test's 18th link) | controls the upstream | worked (replayed on every port); **fixed** as escape_200 | `escape_203_a_reload_that_gives_the_eighteenth_link_ports_replays_the_alias_on_every_port` |
//! | `GUARD_ADDRESSES=private`, .3 in `allowlist.ips`; a reload drops the ips entry while answers for evil.test are in flight | uid 65534 | worked (4 of 4 runs); **fixed**: the learner judges the SSRF guard again under the policy in force | `escape_201_answers_in_flight_while_a_reload_drops_the_ips_entry_the_guard_needed` |
//! | the same race on the named-port path | uid 65534 | held | `escape_208_the_guard_race_of_escape_201_on_the_named_port_path` |
//! | a second reload while the first still puts 144,000 learned addresses back | uid 65534 | held (reloads are serial) | `escape_202_a_second_reload_while_the_first_still_puts_chunks_back` |
//! | a reload adding `denylist.ips: [.3]` while answers for evil.test are in flight | uid 65534 | held (the denied set wins) | `escape_204_answers_in_flight_while_a_reload_denylists_the_address` |
//! | a kept-alive connection switching Host before the reload, then back | uid 65534 | held | `escape_205_a_kept_alive_connection_that_switches_host_before_the_reload` |
//! | 600,000 named-port entries (250 CNAMEs to `tcp/db.test:7001`, 2,400 addresses each), then an unrelated reload | controls the upstream | worked (a co-tenant's DNS waited 10 s); **fixed**: the named-port replay goes back a chunk per lock hold too | `escape_206_many_addresses_opened_on_a_named_port_hold_the_learner_through_a_reload` |
//! | 17 aliases CNAME to a name with ports, then a reload with a denylist of names | uid 65534 | worked (availability only: the name's addresses are not put back until asked again); **fixed**: each way to a name with ports (the question asked) keeps its own chain in `named::Opened` | `escape_207_seventeen_aliases_of_a_name_with_ports_keep_its_replay` |
//!
//! Found by CI (escape_30 lost once), reproduced at once with the refused
//! connections reopened within 20 ms:
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | 600 DNS-over-TCP connections of one uid, each refused one reopened at once | uid 1000 | worked (another client's connection closed: the 128 were counted before the owner lookup refused the greedy client's); **fixed**: slots decided in the accept loop after the lookup | `escape_209_one_client_reopening_refused_dns_tcp_connections_at_once_does_not_starve_another` |
//! | the same against the HTTP proxy (MAX_CONNECTIONS=100) | uid 1000 | worked (another client reset); **fixed** as escape_209 | `escape_210_one_client_reopening_refused_proxy_connections_at_once_does_not_lock_out_another` |
//!
//! Round 13 (against round 12's fixes and the accept-loop admission):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | DNS over TCP on IPv6: a hog of 130 connections, is the owner still found? | uid 1000 / 65534 | held (10 of 10 answered; the event names uid 1000) | `escape_211_dns_over_tcp_on_ipv6_names_the_owner_and_keeps_the_share` |
//! | a connect-and-reset flood at DNS TCP/53 (six processes, ~26k connects), owners gone before the lookup: does UDP DNS wait? | uid 1000 | held (30 of 30, slowest 124 ms) | `escape_212_a_flood_of_reset_dns_tcp_connections_does_not_delay_udp_answers` |
//! | a reload that no longer allows alias.test, whose answer opened db.test's port on .3 | uid 65534 | worked (.3:7001 put back, 3 of 3); **fixed**: a way through an alias is replayed only while the alias is allowed | `escape_213_a_reload_that_stops_allowing_the_question_closes_its_named_port_route` |
//! | a reload that denylists the name with ports itself | uid 65534 | held | `escape_214_a_reload_that_denylists_a_name_with_ports_itself_closes_its_ports` |
//! | a chain of exactly 16 links to a name with ports, then any reload | uid 65534 | worked (availability: never put back, the question counted as a 17th link); **fixed**: a way's chain is the answer's links alone | `escape_215_a_sixteen_link_chain_through_a_name_with_ports_keeps_its_replay` |
//! | the reset flood at the HTTP proxy | uid 1000 | worked (delay only: listen-queue overflows, another client's request 1.2-1.4 s in 3 of 5 runs, none failed); **open** (ignored test) | `escape_216_a_flood_of_reset_proxy_connections_does_not_delay_another_clients_requests` |
//! | the reset flood at DNS TCP/53 against another client's TCP lookups | uid 1000 | held (20 of 20, slowest 100 ms) | `escape_217_a_flood_of_reset_dns_tcp_connections_does_not_delay_another_clients_tcp_answers` |
//!
//! Round 14 (against round 13's fixes):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | one alias answered through two rotating 9-link chains to a name with ports, then any reload | none (the upstream's answers) | worked (availability: the way's merged 18 links refused as over-long); **fixed**: kept links are judged to 64, an answer past 16 marked in them, and chunks copy kept links without re-marking | `escape_220_rotating_chains_of_one_alias_do_not_lose_its_named_port_route_at_a_reload` |
//! | the same to a name without ports (the learned path), reload with a denylist of names | none | worked (availability); **fixed** as escape_220 | `escape_221_rotating_chains_of_one_allowed_alias_do_not_lose_its_addresses_at_a_reload` |
//! | the question allowed only by a wildcard or regex the reload moves, or a glob denylisting it; mixed case and trailing dot | uid 65534 | held | `escape_222_a_reload_that_stops_a_pattern_allowing_the_question_closes_its_named_port_way` |
//! | one query, two questions: alias.test (allowed) and db.test (`tcp/db.test:7001`), the answer holding db.test's A | uid 65534 | worked (.3 opened on every port); **fixed**: a query with more than one question is FORMERR | `escape_223_a_second_question_hides_a_name_with_ports_from_the_chain` |
//! | a question that is itself a name with ports, CNAME to another; a reload drops its entry | uid 65534 | held | `escape_224_a_question_allowed_only_on_some_ports_keeps_no_way_after_a_reload_drops_it` |
//! | the two-question answer with a CNAME, then a reload | uid 65534 | worked (.3:7000 open, and replayed); **fixed** as escape_223 | `escape_225_a_second_questions_widened_address_is_not_replayed_on_every_port` |
//! | a DNAME moving the question onto a name with ports, then a reload that drops the question | uid 65534 | held | `escape_226_a_dname_that_moves_the_question_to_a_name_with_ports_opens_its_ports_only` |
//!
//! Round 15 (against round 14's fixes):
//!
//! | attempt | privilege | result | test |
//! |---------|-----------|--------|------|
//! | HTTPS mode: a name with ports whose A and AAAA replies lead through different 9-link chains | uid 65534 | worked (availability: never opened, the two replies judged as one chain of 18); **fixed**: each reply's chain is kept as one answer's (`resolve::ask_answer`, `Opened::add_kept`, `Cache::keep_chain`) | `escape_230_https_mode_a_name_with_ports_whose_a_and_aaaa_chains_differ_is_opened` |
//! | the same for an allowed alias in the proxies' check cache | uid 65534 | worked (availability: 403 denylisted); **fixed** as escape_230 | `escape_231_https_mode_check_cache_an_alias_whose_a_and_aaaa_chains_differ_is_served` |
//! | a CDN rotating 8 different 9-link chains within a TTL, then a reload with a denylist of names | none (the upstream's answers) | worked (availability: 72 kept links, refused whole at the reload); **open** (ignored test) | `escape_232_a_cdn_rotating_its_links_eight_times_keeps_its_address_at_a_reload` |
//! | `DNS_IN_HTTPS_MODE`: a name with ports asked at the listener, then `Host:` it on port 80 | uid 65534 | held (403 not-allowlisted) | `escape_233_https_mode_a_name_with_ports_is_not_served_over_the_http_proxy_on_port_80` |
//! | HTTPS mode: an allowed alias that CNAMEs to a name with ports, `Host:` the alias on port 80 | uid 65534 | worked (consistency: served, where strict DNS mode opens the name's ports only; not past a denylist, and the alias's zone could point at the address directly); **open** (ignored test) | `escape_234_https_mode_an_alias_through_a_name_with_ports_is_judged_as_in_dns_mode` |
//!
//! Needs root (CI runs as root); fails loudly without it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::within as in_netns;
use crate::netns::{wait_for, Pair};
use crate::run::{curl, policy_file, world, Daemon, World};
use crate::util;

/// "Fast": a refusal well inside this, against clients that would
/// otherwise wait their multi-second timeout.
const FAST: Duration = Duration::from_secs(1);
/// How long a client waits before it calls the attempt a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// `egret run` in the workload namespace of a fresh `world()`; the daemon
/// is dropped (killed) before the namespaces go.
struct Setup {
    d: Daemon,
    w: World,
}

fn setup(tag: &str, yaml: &str, env: &[(&str, &str)]) -> Setup {
    let w = world();
    let pol = policy_file(&format!("escape-{tag}"), yaml);
    let upstream = format!("{}:53", w.p.v4(2));
    let mut all = vec![("DNS_UPSTREAMS", upstream.as_str())];
    all.extend_from_slice(env);
    let d = Daemon::start(&w.p.work, &pol, &all);
    Setup { d, w }
}

const ALLOWED: &str = "allowlist:\n  domains: [\"allowed.test\"]\n";

impl Setup {
    fn p(&self) -> &Pair {
        &self.w.p
    }

    fn addr(&self, host: &str, port: u16) -> SocketAddr {
        let ip: std::net::IpAddr = host.parse().expect("ip");
        SocketAddr::new(ip, port)
    }

    /// Waits for the next event with this msg, whatever its fields.
    fn next(&self, msg: &str) -> serde_json::Value {
        self.d.wait_event(msg, "msg", msg)
    }

    /// Waits (bounded) for the next event that `f` accepts; the events
    /// before it are passed over.
    fn event_where(&self, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_for(Duration::from_secs(10), || self.d.events.try_iter().find(|e| f(e)))
            .expect("no such event within 10 s")
    }
}

/// How a TCP attempt ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Everything the other side sent.
    pub(crate) reply: Vec<u8>,
    /// `None`: orderly close; `Some(kind)`: connect, read or write error.
    pub(crate) err: Option<ErrorKind>,
    /// From the start until the connection ended (or the client gave up).
    pub(crate) took: Duration,
}

impl Outcome {
    pub(crate) fn text(&self) -> String {
        util::text(&self.reply)
    }

    fn timed_out(&self) -> bool {
        matches!(self.err, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }

    /// Ended by the other side (close, reset, refusal) within [`FAST`].
    fn assert_fast(&self, what: &str) {
        assert!(!self.timed_out(), "{what}: the client hung until its timeout: {self:?}");
        assert!(self.took < FAST, "{what}: ended only after {:?}", self.took);
    }

    /// Nothing from upstream came back (the test servers answer every
    /// request with "hello from" or "echo:").
    fn assert_not_served(&self, what: &str) {
        let t = self.text();
        assert!(!t.contains("hello from") && !t.contains("echo:"), "{what}: upstream answered: {t}");
    }
}

/// From inside `ns`: connects to `to`, writes `chunks` with `gap` between
/// them, and reads until the connection ends or `timeout` passes. A reader
/// thread notes the end, so a close is seen at once even mid-write.
pub(crate) fn tcp(
    ns: &str,
    to: SocketAddr,
    chunks: Vec<Vec<u8>>,
    gap: Duration,
    timeout: Duration,
) -> Outcome {
    in_netns(ns, move || tcp_here(to, None, chunks, gap, timeout))
}

fn tcp_here(
    to: SocketAddr,
    from_port: Option<u16>,
    chunks: Vec<Vec<u8>>,
    gap: Duration,
    timeout: Duration,
) -> Outcome {
    let start = Instant::now();
    let s = match from_port {
        None => TcpStream::connect_timeout(&to, timeout),
        Some(port) => connect_from(to, port),
    };
    let s = match s {
        Ok(s) => s,
        Err(e) => return Outcome { reply: Vec::new(), err: Some(e.kind()), took: start.elapsed() },
    };
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    let done = Arc::new(AtomicBool::new(false));
    let mut r = s.try_clone().expect("clone socket");
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reply = Vec::new();
            let mut buf = [0u8; 4096];
            let err = loop {
                match r.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                    Err(e) => break Some(e.kind()),
                }
            };
            done.store(true, Ordering::SeqCst);
            (reply, err, start.elapsed())
        })
    };
    let mut w = &s;
    for (i, c) in chunks.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            std::thread::sleep(gap);
        }
        if done.load(Ordering::SeqCst) || w.write_all(c).is_err() {
            break;
        }
    }
    let (reply, err, took) = reader.join().expect("reader thread");
    Outcome { reply, err, took }
}

/// A TCP connection from source port `port` (SO_REUSEADDR, so a port
/// whose last connection was just reset can be taken again).
fn connect_from(to: SocketAddr, port: u16) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let fam = if to.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let any: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], port).into() } else { ([0u16; 8], port).into() };
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(any))?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Closes with a reset (SO_LINGER 0): no TIME_WAIT, so the same client
/// port can be used again at once, as a busy client's port is.
fn reset_close(s: TcpStream) {
    let l = nix::libc::linger { l_onoff: 1, l_linger: 0 };
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &l).expect("SO_LINGER");
    drop(s);
}

/// One request on a fresh connection.
pub(crate) fn http(ns: &str, to: SocketAddr, req: &str) -> Outcome {
    tcp(ns, to, vec![req.as_bytes().to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
}

pub(crate) fn get(host: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// From inside `ns`: one UDP datagram to `to` and a wait for an answer.
/// Ok(reply) or the error kind, and how long it took.
pub(crate) fn udp(ns: &str, to: SocketAddr, payload: &[u8]) -> (Result<Vec<u8>, ErrorKind>, Duration) {
    let payload = payload.to_vec();
    in_netns(ns, move || {
        let start = Instant::now();
        let r = (|| {
            let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
            let s = UdpSocket::bind(any)?;
            s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
            s.connect(to)?;
            s.send(&payload)?;
            let mut buf = [0u8; 2048];
            let n = s.recv(&mut buf)?;
            Ok(buf[..n].to_vec())
        })();
        (r.map_err(|e: std::io::Error| e.kind()), start.elapsed())
    })
}

/// A UDP datagram refused at once: the reject's EPERM on send, or the
/// ICMP unreachable on the next receive.
fn assert_udp_refused_fast(r: &(Result<Vec<u8>, ErrorKind>, Duration), what: &str) {
    assert!(
        matches!(r.0, Err(ErrorKind::PermissionDenied | ErrorKind::ConnectionRefused)),
        "{what}: not refused: {r:?}"
    );
    assert!(r.1 < FAST, "{what}: refused only after {:?}", r.1);
}

/// A ClientHello (TLS 1.2 framing, one TLS 1.3 suite) naming `sni` (raw
/// bytes, so invalid names can be sent), padded with a padding extension
/// of `pad` bytes, cut into records of at most 2^14 bytes.
pub(crate) fn hello(sni: Option<&[u8]>, pad: usize) -> Vec<u8> {
    fn u16b(n: usize) -> [u8; 2] {
        (u16::try_from(n).expect("fits u16")).to_be_bytes()
    }
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let mut list = vec![0u8];
        list.extend(u16b(name.len()));
        list.extend(name);
        ext.extend([0, 0]);
        ext.extend(u16b(list.len() + 2));
        ext.extend(u16b(list.len()));
        ext.extend(list);
    }
    if pad > 0 {
        ext.extend([0, 0x15]);
        ext.extend(u16b(pad));
        ext.extend(vec![0u8; pad]);
    }
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01, 1, 0]);
    body.extend(u16b(ext.len()));
    body.extend(ext);
    let n = body.len();
    let mut hs = vec![1, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    hs.extend(body);
    let mut out = Vec::new();
    for rec in hs.chunks(1 << 14) {
        out.extend([22, 3, 1]);
        out.extend(u16b(rec.len()));
        out.extend(rec);
    }
    out
}

fn tls(ns: &str, to: SocketAddr, hello: Vec<u8>) -> Outcome {
    tcp(ns, to, vec![hello], Duration::ZERO, CLIENT_TIMEOUT)
}

/// A blocked TLS attempt: no bytes back, ended fast.
fn assert_tls_blocked(o: &Outcome, what: &str) {
    assert!(o.reply.is_empty(), "{what}: got bytes back: {o:?}");
    o.assert_fast(what);
}

/// A blocked HTTP attempt: 403 from egret, fast, nothing from upstream.
fn assert_403(o: &Outcome, what: &str) {
    assert!(o.text().starts_with("HTTP/1.1 403"), "{what}: {o:?}");
    o.assert_not_served(what);
    o.assert_fast(what);
}

#[test]
fn escape_01_allowed_sni_sent_to_a_foreign_ip() {
    let s = setup("01", ALLOWED, &[]);
    let p = s.p();
    // allowed.test is at .2 (A) and fd00:200::2 (AAAA); .3 and ::3 are not it.
    for host in [p.v4(3), p.v6(3)] {
        let o = tls(&p.work, s.addr(&host, 443), hello(Some(b"allowed.test"), 0));
        assert_tls_blocked(&o, &format!("SNI allowed.test to {host}"));
        let ev = s.d.wait_event("https.blocked", "destination_ip", host.as_str());
        assert_eq!(ev["reason"], "ip-mismatch", "{ev}");
        assert_eq!(ev["https"], "allowed.test", "{ev}");
    }
}

#[test]
fn escape_03_host_switch_on_the_second_keep_alive_request() {
    let s = setup("03", ALLOWED, &[]);
    let p = s.p();
    let to = s.addr(&p.v4(2), 80);
    let first = b"GET /1 HTTP/1.1\r\nHost: allowed.test\r\n\r\n".to_vec();
    let second = b"GET /2 HTTP/1.1\r\nHost: blocked.test\r\n\r\n".to_vec();
    // Once as two writes (the second after the first answer), once pipelined.
    for (chunks, gap) in [
        (vec![first.clone(), second.clone()], Duration::from_millis(200)),
        (vec![[first, second].concat()], Duration::ZERO),
    ] {
        let o = tcp(&p.work, to, chunks, gap, CLIENT_TIMEOUT);
        let t = o.text();
        assert_eq!(t.matches("hello from").count(), 1, "only the first request is served: {t}");
        let forbidden = t.find("HTTP/1.1 403").unwrap_or_else(|| panic!("second request not refused: {t}"));
        assert!(t.find("HTTP/1.1 200").is_some_and(|ok| ok < forbidden), "{t}");
        assert!(!o.timed_out(), "connection left open after the refusal: {o:?}");
        assert!(o.took < FAST + gap, "took {:?}", o.took);
        let ev = s.d.wait_event("http.blocked", "http_host", "blocked.test");
        assert_eq!(ev["reason"], "not-allowlisted", "{ev}");
    }
}

#[test]
fn escape_04_absolute_form_uri_to_another_host() {
    let s = setup("04", ALLOWED, &[]);
    let p = s.p();
    for target in ["http://blocked.test/", "http://blocked.test:80/x", "http://10.200.0.9/"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: allowed.test\r\n\r\n");
        let o = http(&p.work, s.addr(&p.v4(2), 80), &req);
        assert_403(&o, target);
        let ev = s.next("http.blocked");
        assert_eq!(ev["reason"], "host-mismatch", "{target}: {ev}");
    }
}

#[test]
fn escape_05_ipv6_to_a_non_allowed_address() {
    let s = setup("05", ALLOWED, &[]);
    let p = s.p();
    let v6 = p.v6(3);

    let o = http(&p.work, s.addr(&v6, 80), &get("allowed.test"));
    assert_403(&o, "v6 :80");
    let ev = s.d.wait_event("http.blocked", "destination_ip", v6.as_str());
    assert_eq!(ev["reason"], "ip-mismatch", "{ev}");

    let o = tls(&p.work, s.addr(&v6, 443), hello(Some(b"allowed.test"), 0));
    assert_tls_blocked(&o, "v6 :443");
    let ev = s.d.wait_event("https.blocked", "destination_ip", v6.as_str());
    assert_eq!(ev["reason"], "ip-mismatch", "{ev}");

    let o = http(&p.work, s.addr(&v6, 8000), &get("allowed.test"));
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "v6 :8000 {o:?}");
    o.assert_fast("v6 :8000");
    let ev = s.d.wait_event("nflog.event", "destination_port", 8000);
    assert_eq!((ev["action"].as_str(), ev["destination_ip"].as_str()), (Some("BLOCKED"), Some(v6.as_str())));
}

/// HTTPS mode, and strict DNS mode before any lookup. (Plain DNS mode
/// filters names only and lets other traffic pass by design.)
const UDP_MODES: [(&str, &[(&str, &str)]); 2] =
    [("https", &[]), ("dns-strict", &[("FILTER_MODE", "dns"), ("DNS_STRICT", "true")])];

#[test]
fn escape_06_quic_udp_443() {
    for (mode, env) in UDP_MODES {
        let s = setup(&format!("06-{mode}"), ALLOWED, env);
        let p = s.p();
        // A QUIC Initial starts with a long header (0xc0..); any payload does.
        for host in [p.v4(2), p.v4(3), p.v6(3)] {
            let r = udp(&p.work, s.addr(&host, 443), b"\xc3\x00\x00\x00\x01quic-initial");
            assert_udp_refused_fast(&r, &format!("udp {host}:443"));
            let ev = s.d.wait_event("nflog.event", "destination_ip", host.as_str());
            assert_eq!(
                (ev["protocol"].as_str(), ev["destination_port"].as_u64()),
                (Some("UDP"), Some(443)),
                "{ev}"
            );
            assert_eq!(ev["action"], "BLOCKED", "{mode}: {ev}");
        }
    }
}

#[test]
fn escape_07_dot_853_in_both_modes() {
    for mode in ["https", "dns"] {
        let s = setup(&format!("07-{mode}"), ALLOWED, &[("FILTER_MODE", mode)]);
        let p = s.p();
        let o = http(&p.work, s.addr(&p.v4(2), 853), "\x16\x03\x01");
        assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "{mode}: tcp 853 {o:?}");
        o.assert_fast(&format!("{mode}: tcp 853"));
        let ev = s.d.wait_event("nflog.event", "destination_port", 853);
        assert_eq!((ev["protocol"].as_str(), ev["action"].as_str()), (Some("TCP"), Some("BLOCKED")), "{ev}");
        let r = udp(&p.work, s.addr(&p.v6(2), 853), b"doq");
        assert_udp_refused_fast(&r, &format!("{mode}: udp 853"));
        let ev = s.d.wait_event("nflog.event", "protocol", "UDP");
        assert_eq!(ev["destination_port"], 853, "{ev}");
    }
}

/// `dig` inside `ns`: (output, seconds taken).
fn dig_in(ns: &str, server: &str, name: &str) -> (String, Duration) {
    let mut c = Pair::exec(ns, "dig");
    c.args([&format!("@{server}"), name, "A", "+time=3", "+tries=1"]);
    let start = Instant::now();
    let (_, out, _) = util::run(c);
    (out, start.elapsed())
}

#[test]
fn escape_08_dns_to_an_outside_resolver_in_both_modes() {
    // HTTPS mode: a resolver other than DNS_UPSTREAMS is just another
    // blocked address (egret's own upstream stays reachable for egret).
    let s = setup("08-https", ALLOWED, &[]);
    let p = s.p();
    let r = udp(
        &p.work,
        s.addr(&p.v4(3), 53),
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",
    );
    assert_udp_refused_fast(&r, "https mode: udp to .3:53");
    let ev = s.d.wait_event("nflog.event", "destination_ip", p.v4(3).as_str());
    assert_eq!(ev["destination_port"], 53, "{ev}");
    let o = http(&p.work, s.addr(&p.v4(3), 53), "x");
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "https mode: tcp to .3:53 {o:?}");
    o.assert_fast("https mode: tcp to .3:53");
    drop(s);

    // DNS mode: every query on port 53, to whatever address, is answered
    // by egret's filtering resolver, so a blocked name stays unresolved.
    let s = setup("08-dns", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    for server in [p.v4(3), p.v6(3)] {
        let (out, took) = dig_in(&p.work, &server, "blocked.test");
        assert!(out.contains("status: NXDOMAIN"), "dns mode: blocked.test via {server}: {out}");
        assert!(took < FAST * 2, "dns mode: answer via {server} took {took:?}");
        let ev = s.d.wait_event("dns.blocked", "qname", "blocked.test");
        assert_eq!(ev["reason"], "not-allowlisted", "{ev}");
    }
    let (out, _) = dig_in(&p.work, &p.v4(3), "allowed.test");
    assert!(out.contains(&p.v4(2)), "dns mode: the allowed name still resolves: {out}");
}

#[test]
fn escape_09_direct_ip_in_strict_dns_mode() {
    let s = setup("09", ALLOWED, &[("FILTER_MODE", "dns"), ("DNS_STRICT", "true")]);
    let p = s.p();
    let to = s.addr(&p.v4(2), 80);
    // Before any lookup, the very address of the allowed name is closed.
    let o = http(&p.work, to, &get("allowed.test"));
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "direct IP before a lookup {o:?}");
    o.assert_fast("direct IP before a lookup");
    let ev = s.d.wait_event("nflog.event", "destination_ip", p.v4(2).as_str());
    assert_eq!(ev["action"], "BLOCKED", "{ev}");
    // A blocked name's lookup teaches nothing: .2 stays closed for it.
    let (out, _) = dig_in(&p.work, &p.v4(2), "blocked.test");
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let o = http(&p.work, to, &get("blocked.test"));
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "after a blocked lookup {o:?}");
    // The allowed lookup opens it (so the refusals above were the strict
    // rule, not a broken path), and other addresses stay closed.
    let (out, _) = dig_in(&p.work, &p.v4(2), "allowed.test");
    assert!(out.contains("status: NOERROR"), "{out}");
    let o = http(&p.work, to, &get("allowed.test"));
    assert!(o.text().contains(&format!("hello from {}", p.v4(2))), "after the lookup: {o:?}");
    let o = http(&p.work, s.addr(&p.v4(3), 80), &get("allowed.test"));
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "an unlearned address {o:?}");
    o.assert_fast("an unlearned address");
}

#[test]
fn escape_11_udp_other_than_dns() {
    for (mode, env) in UDP_MODES {
        let s = setup(&format!("11-{mode}"), ALLOWED, env);
        let p = s.p();
        for (host, port) in [(p.v4(2), 7001), (p.v6(2), 123), (p.v4(3), 5353)] {
            let r = udp(&p.work, s.addr(&host, port), b"x");
            assert_udp_refused_fast(&r, &format!("{mode}: udp {host}:{port}"));
            let ev = s.d.wait_event("nflog.event", "destination_port", port);
            assert_eq!(
                (ev["protocol"].as_str(), ev["action"].as_str()),
                (Some("UDP"), Some("BLOCKED")),
                "{mode}: {ev}"
            );
        }
    }
}

#[test]
fn escape_12_egrets_own_listener_ports() {
    let s = setup("12", ALLOWED, &[]);
    let p = s.p();
    // From inside: straight at the listeners, by loopback and own address.
    let local = [("127.0.0.1", 8443), ("::1", 8080), ("127.0.0.1", 8080), ("::1", 8443)];
    for (host, port) in &local {
        let to = s.addr(host, *port);
        let o = if *port == 8443 {
            tls(&p.work, to, hello(Some(b"allowed.test"), 0))
        } else {
            http(&p.work, to, &get("allowed.test"))
        };
        o.assert_not_served(&format!("{to}"));
        assert!(!o.text().contains("200 OK"), "{to}: {o:?}");
        o.assert_fast(&format!("{to}"));
        let port = *port;
        let ev = s.event_where(|e| e["reason"] == "self-destination" && e["destination_port"] == port);
        assert_eq!(ev["action"], "BLOCKED", "{ev}");
    }
    // The listeners are bound to loopback only: the workload's own
    // addresses refuse at once.
    for (host, port) in [(p.v4(1), 8080), (p.v6(1), 8443)] {
        let to = s.addr(&host, port);
        let o = http(&p.work, to, &get("allowed.test"));
        assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "{to}: {o:?}");
        o.assert_fast(&format!("{to}"));
    }
    // From another host on the link: no answer at all (dropped).
    for (host, port) in [(p.v4(1), 8080), (p.v6(1), 8443), (p.v4(1), 8443)] {
        let to = s.addr(&host, port);
        let o =
            tcp(&p.up, to, vec![get("allowed.test").into_bytes()], Duration::ZERO, Duration::from_secs(2));
        assert!(o.reply.is_empty(), "another host got an answer from {to}: {o:?}");
    }
}

#[test]
fn escape_13_bad_client_hellos() {
    let s = setup("13", ALLOWED, &[]);
    let p = s.p();
    let to = s.addr(&p.v4(2), 443);
    let whole = hello(Some(b"blocked.test"), 0);
    let ip = p.v4(2);
    let byte_by_byte: Vec<Vec<u8>> = whole.iter().map(|b| vec![*b]).collect();
    let big = hello(Some(b"blocked.test"), 20_000);
    assert!(big.len() > 16 * 1024 + 2 * 5, "the big hello spans two records");
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("no SNI", vec![hello(None, 0)], "no-sni"),
        ("IP literal SNI", vec![hello(Some(ip.as_bytes()), 0)], "not-allowlisted"),
        ("IPv6 literal SNI", vec![hello(Some(b"fd00:200::2"), 0)], "not-allowlisted"),
        ("not a handshake record", vec![b"\x17\x03\x03\x00\x05hello".to_vec()], "peek-failed"),
        ("plain HTTP on 443", vec![get("allowed.test").into_bytes()], "peek-failed"),
        (
            "server_name list overrunning its extension",
            vec![{
                // The server_name list claims more than its extension holds.
                let mut h = hello(Some(b"allowed.test"), 0);
                assert_eq!(h[52..54], [0, 0], "server_name extension");
                h[57] += 9;
                h
            }],
            "peek-failed",
        ),
        ("SSLv2-style record", vec![b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10".to_vec()], "peek-failed"),
        ("split byte by byte", byte_by_byte, "not-allowlisted"),
        ("over 16 KiB, two records", vec![big], "not-allowlisted"),
    ];
    for (what, chunks, reason) in cases {
        let gap = if chunks.len() > 1 { Duration::from_millis(1) } else { Duration::ZERO };
        let o = tcp(&p.work, to, chunks, gap, CLIENT_TIMEOUT);
        assert_tls_blocked(&o, what);
        let ev = s.next("https.blocked");
        assert_eq!(ev["reason"], reason, "{what}: {ev}");
    }
    // Truncated: half a hello, then the client closes its side.
    let half = whole[..whole.len() / 2].to_vec();
    let o = in_netns(&p.work, move || {
        let start = Instant::now();
        let mut c = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT).expect("connect");
        c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        c.write_all(&half).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let r = c.read_to_end(&mut rest);
        Outcome { reply: rest, err: r.err().map(|e| e.kind()), took: start.elapsed() }
    });
    assert_tls_blocked(&o, "truncated");
    let ev = s.next("https.blocked");
    assert_eq!(ev["reason"], "peek-failed", "truncated: {ev}");
}

#[test]
fn escape_14_slowloris_on_both_proxies() {
    // HEADER_TIMEOUT is a deadline for the whole head, so a byte every
    // 100 ms does not keep a connection (and its thread) forever.
    let s = setup("14", ALLOWED, &[("HEADER_TIMEOUT", "2s")]);
    let p = s.p();
    let head = b"GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Slow: ".to_vec();
    let mut http_chunks = vec![head];
    http_chunks.extend((0..100).map(|_| b"a".to_vec()));
    let full = hello(Some(b"allowed.test"), 0);
    let tls_chunks: Vec<Vec<u8>> = full[..full.len() - 1].iter().map(|b| vec![*b]).collect();
    let work = p.work.clone();
    let to80 = s.addr(&p.v4(2), 80);
    let to443 = s.addr(&p.v4(2), 443);
    let gap = Duration::from_millis(100);
    let t = std::thread::spawn(move || tcp(&work, to443, tls_chunks, gap, Duration::from_secs(10)));
    let h = tcp(&p.work, to80, http_chunks, gap, Duration::from_secs(10));
    let t = t.join().expect("tls slowloris");
    for (o, what) in [(&h, "http"), (&t, "https")] {
        o.assert_not_served(what);
        assert!(!o.timed_out(), "{what}: connection never closed: {o:?}");
        assert!(
            o.took >= Duration::from_millis(1500) && o.took < Duration::from_secs(4),
            "{what}: closed after {:?}, want about HEADER_TIMEOUT (2 s)",
            o.took
        );
    }
    assert!(h.text().is_empty() || h.text().starts_with("HTTP/1.1 403"), "{h:?}");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = s.event_where(|e| e["reason"] == "header-timeout");
        seen.push(ev["msg"].as_str().unwrap_or_default().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["http.blocked", "https.blocked"]);
}

/// Threads of process `pid` (from /proc).
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: line")
}

#[test]
fn escape_15_ten_thousand_connections_at_once() {
    const FLOOD: usize = 10_000;
    const OPENERS: usize = 10;
    // The flood's sockets live in this test process: take the hard limit.
    // As root the hard limit itself may be raised when it is too low; egret
    // (a child) inherits it. Egret's idle connections hold one descriptor
    // each, and a client may hold three quarters of what the limit leaves
    // (escape_69): 10,000 fit under 20,000.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = (FLOOD + 2000) as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, need.max(hard), need.max(hard)).unwrap_or_else(|e| {
            panic!("RLIMIT_NOFILE {soft}/{hard} is too low for the flood and cannot be raised: {e}")
        });
    }
    // Room for the flood plus the checks; a long header timeout so the
    // flood holds its slots (and egret's threads) while we check. The flood
    // comes from one client (this process), which may hold three quarters
    // of MAX_CONNECTIONS (the rest is kept for clients that hold few).
    let s = setup("15", ALLOWED, &[("MAX_CONNECTIONS", "13400"), ("HEADER_TIMEOUT", "60s")]);
    let p = s.p();
    let pid = s.d.child.id();
    let before = threads(pid);
    let to = s.addr(&p.v4(3), 80);
    let start = Instant::now();
    let openers: Vec<_> = (0..OPENERS)
        .map(|_| {
            let ns = p.work.clone();
            std::thread::spawn(move || {
                in_netns(&ns, move || {
                    let mut held = Vec::with_capacity(FLOOD / OPENERS);
                    for _ in 0..FLOOD / OPENERS {
                        match TcpStream::connect_timeout(&to, Duration::from_secs(10)) {
                            Ok(c) => held.push(c),
                            Err(e) => panic!("flood connection {} failed: {e}", held.len()),
                        }
                    }
                    held
                })
            })
        })
        .collect();
    let flood: Vec<TcpStream> = openers.into_iter().flat_map(|t| t.join().expect("opener")).collect();
    let opened = start.elapsed();
    assert_eq!(flood.len(), FLOOD);
    eprintln!("escape_15: {FLOOD} connections open after {opened:?}");
    // Every one of them reached egret (a thread each), none got upstream.
    let busy = wait_for(Duration::from_secs(30), || {
        let n = threads(pid);
        (n >= before + FLOOD).then_some(n)
    });
    assert!(busy.is_some(), "egret has {} threads, want {before} + {FLOOD}", threads(pid));

    // With all of them held, allowed traffic is served and blocked is
    // refused, both without delay.
    let allowed = s.addr(&p.v4(2), 80);
    for _ in 0..3 {
        let o = http(&p.work, allowed, &get("allowed.test"));
        assert!(o.text().contains(&format!("hello from {}", p.v4(2))), "allowed during the flood: {o:?}");
        assert!(o.took < FAST * 2, "allowed request took {:?} during the flood", o.took);
        let o = http(&p.work, s.addr(&p.v4(3), 80), &get("blocked.test"));
        assert_403(&o, "blocked during the flood");
    }
    // The flood goes: so do egret's threads (bounded wait).
    drop(flood);
    let calm = wait_for(Duration::from_secs(30), || (threads(pid) <= before + 10).then_some(()));
    assert!(calm.is_some(), "egret still has {} threads after the flood left (had {before})", threads(pid));
    let o = http(&p.work, allowed, &get("allowed.test"));
    assert!(o.text().contains("hello from"), "allowed after the flood: {o:?}");
}

#[test]
fn escape_17_icmp_to_non_allowed_hosts() {
    let w = world();
    let pol = policy_file("escape-17", &format!("allowlist:\n  ips: [\"{}\"]\n", w.p.v4(2)));
    let upstream = format!("{}:53", w.p.v4(2));
    let s = Setup { d: Daemon::start(&w.p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]), w };
    let p = s.p();
    // ping's answer line, and when it came: ping itself lingers a second
    // after an error reply, which is not the client's wait.
    let ping = |host: &str| -> (String, Duration) {
        let mut c = Pair::exec(&p.work, "sh");
        c.args(["-c", &format!("exec ping -n -c 1 -W 3 {host} 2>&1")]);
        c.stdout(std::process::Stdio::piped()).stdin(std::process::Stdio::null());
        let start = Instant::now();
        let mut child = c.spawn().expect("spawn ping (iputils-ping)");
        let out = child.stdout.take().expect("stdout");
        let line = std::io::BufRead::lines(std::io::BufReader::new(out))
            .map_while(Result::ok)
            .find(|l| {
                ["bytes from", "nreachable", "prohibited", "not permitted", "100% packet loss"]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .unwrap_or_default();
        let took = start.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        (line, took)
    };
    // The allowed address answers (so the refusals below are the rules).
    let (line, _) = ping(&p.v4(2));
    assert!(line.contains("bytes from"), "ping to an allowed address: {line}");
    for host in [p.v4(3), p.v6(2), p.v6(3)] {
        let (line, took) = ping(&host);
        assert!(
            ["nreachable", "prohibited", "not permitted"].iter().any(|m| line.contains(m)),
            "ping {host} not refused: {line}"
        );
        assert!(took < FAST, "ping {host} refused only after {took:?}: {line}");
        let ev = s.d.wait_event("nflog.event", "destination_ip", host.as_str());
        // The IP protocol number, as g0efilter writes it (issue 16).
        let proto = if host.contains(':') { "58" } else { "1" };
        assert_eq!((ev["protocol"].as_str(), ev["action"].as_str()), (Some(proto), Some("BLOCKED")), "{ev}");
    }
}

#[test]
fn escape_18_wildcard_does_not_allow_the_apex() {
    let s = setup("18", "allowlist:\n  domains: [\"*.allowed.test\"]\n", &[]);
    let p = s.p();
    for host in ["allowed.test", "allowed.test.", "ALLOWED.TEST"] {
        let o = http(&p.work, s.addr(&p.v4(2), 80), &get(host));
        assert_403(&o, host);
        let ev = s.next("http.blocked");
        assert_eq!(ev["reason"], "not-allowlisted", "{host}: {ev}");
    }
    let o = tls(&p.work, s.addr(&p.v4(2), 443), hello(Some(b"allowed.test"), 0));
    assert_tls_blocked(&o, "SNI allowed.test");
    let ev = s.next("https.blocked");
    assert_eq!(ev["reason"], "not-allowlisted", "{ev}");
}

#[test]
fn escape_19_idn_punycode_and_case_tricks() {
    let s = setup("19", ALLOWED, &[]);
    let p = s.p();
    let to80 = s.addr(&p.v4(2), 80);
    let to443 = s.addr(&p.v4(2), 443);
    // Case, one trailing dot and characters IDNA maps away (zero width
    // space, soft hyphen, full-width letters) spell allowed.test itself:
    // served at its own address, and only there.
    let same = ["AlLoWeD.TeSt.", "allowed.test\u{200B}", "allo\u{00AD}wed.test", "\u{FF41}llowed.test"];
    for host in same {
        let o = http(&p.work, to80, &get(host));
        assert!(o.text().contains("hello from"), "{host:?} is allowed.test: {o:?}");
        s.d.wait_event("http.allowed", "http_host", "allowed.test");
        let o = http(&p.work, s.addr(&p.v4(3), 80), &get(host));
        assert_403(&o, &format!("{host:?} to .3"));
        let ev = s.d.wait_event("http.blocked", "destination_ip", p.v4(3).as_str());
        assert_eq!(ev["reason"], "ip-mismatch", "{host:?}: {ev}");
    }
    // Look-alikes and encodings of other names: never served.
    let tricks = [
        "BLOCKED.TEST",
        "allowed.t\u{0435}st", // Cyrillic ie for the e
        "xn--allowed-test",    // punycode that is not allowed.test
        "xn--llowed-5ya.test", // punycode of a look-alike label
        "allowed.test..",      // two trailing dots
        "allowed.test.blocked.test",
        "allowed.test@blocked.test",
        "allowed.test%2eblocked",
        "allowed\u{00AD}.test.evil",        // soft hyphen is mapped away
        "allowed.test\u{3002}blocked.test", // ideographic full stop
    ];
    for host in tricks {
        let o = http(&p.work, to80, &get(host));
        assert_403(&o, host);
        let ev = s.next("http.blocked");
        assert!(
            matches!(ev["reason"].as_str(), Some("not-allowlisted" | "invalid-name" | "ip-mismatch")),
            "{host}: {ev}"
        );
        let o = tls(&p.work, to443, hello(Some(host.as_bytes()), 0));
        assert_tls_blocked(&o, &format!("SNI {host}"));
        let ev = s.next("https.blocked");
        assert!(
            matches!(ev["reason"].as_str(), Some("not-allowlisted" | "invalid-name")),
            "SNI {host}: {ev}"
        );
    }
}

#[test]
fn escape_20_dashboard_unreachable_filtering_unaffected() {
    // Two broken dashboards: one refusing, one that accepts and never
    // answers (a listener nobody accepts on, in the upstream namespace).
    let w = world();
    let p = &w.p;
    let up = SocketAddr::new(p.v4(3).parse().unwrap(), 8081);
    let _silent = in_netns(&p.up, move || std::net::TcpListener::bind(up).expect("bind silent dashboard"));
    let pol = policy_file("escape-20", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    for dash in ["http://127.0.0.1:9".to_owned(), format!("http://{up}")] {
        let env = [
            ("DNS_UPSTREAMS", upstream.as_str()),
            ("DASHBOARD_HOST", dash.as_str()),
            ("DASHBOARD_API_KEY", "k"),
            ("DASHBOARD_START_DELAY", "0s"),
        ];
        let d = Daemon::start(&p.work, &pol, &env);
        // Enough events to fill batches and retries.
        for i in 0..20 {
            let o = http(&p.work, SocketAddr::new(p.v4(2).parse().unwrap(), 80), &get("allowed.test"));
            assert!(o.text().contains("hello from"), "{dash}: allowed #{i}: {o:?}");
            assert!(o.took < FAST, "{dash}: allowed #{i} took {:?}", o.took);
            let o = http(&p.work, SocketAddr::new(p.v4(3).parse().unwrap(), 80), &get("blocked.test"));
            assert_403(&o, &format!("{dash}: blocked #{i}"));
        }
        let (code, _) = curl(&p.work, &[&format!("http://{}:8000/", p.v4(2))]);
        assert_eq!(code, "000", "{dash}: other port");
        // Events still reach stdout.
        d.wait_event("http.blocked", "http_host", "blocked.test");
        d.wait_event("nflog.event", "destination_port", 8000);
    }
}

#[test]
fn escape_21_client_port_reused_across_a_reload() {
    let w = world();
    let p = &w.p;
    let _echo = Pair::spawn_ready(&p.up, crate::nft::py(), &[&crate::nft::data("servers.py"), "7000", ""]);
    let with = format!("allowlist:\n  ips: [\"{}\"]\n  domains: [\"allowed.test\"]\n", p.v4(3));
    let pol = policy_file("escape-21", &with);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let web = SocketAddr::new(p.v4(3).parse().unwrap(), 80);
    let echo = SocketAddr::new(p.v4(3).parse().unwrap(), 7000);
    let (web_port, echo_port) = (40_000 + p.n as u16, 41_000 + p.n as u16);

    // While .3 is allowed: straight through, from fixed client ports; the
    // connections end with a reset, leaving fresh conntrack entries.
    let ok = in_netns(&p.work, move || {
        let mut out = Vec::new();
        for (to, port, req) in [(web, web_port, get("allowed.test")), (echo, echo_port, "x\n".to_owned())] {
            let mut c = connect_from(to, port).expect("connect while allowed");
            c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            let mut buf = [0u8; 512];
            let mut n = 0;
            // Until the whole answer is in (bounded by the read timeout).
            while let Ok(k @ 1..) = c.read(&mut buf[n..]) {
                n += k;
                let t = util::text(&buf[..n]);
                if t.contains("hello from") || t.contains("echo:") {
                    break;
                }
            }
            out.push(util::text(&buf[..n]));
            reset_close(c);
        }
        out
    });
    assert!(ok[0].contains(&format!("hello from {}", p.v4(3))), "{ok:?}");
    assert!(ok[1].contains("echo:x"), "{ok:?}");
    // And one flow held open across the reload.
    let mut held =
        Pair::spawn_ready(&p.work, crate::nft::py(), &[&crate::nft::data("session.py"), &p.v4(3), "7000"]);

    std::fs::write(&pol, ALLOWED).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));

    // The same client ports again, at once: the old entries must not
    // carry the new connections past the rules.
    let again = in_netns(&p.work, move || {
        let web = tcp_here(
            web,
            Some(web_port),
            vec![get("allowed.test").into_bytes()],
            Duration::ZERO,
            CLIENT_TIMEOUT,
        );
        let echo = tcp_here(echo, Some(echo_port), vec![b"y\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        (web, echo)
    });
    assert_403(&again.0, "reused port to .3:80");
    let ev = d.wait_event("http.blocked", "destination_ip", p.v4(3).as_str());
    assert_eq!(ev["reason"], "ip-mismatch", "{ev}");
    assert_eq!(again.1.err, Some(ErrorKind::ConnectionRefused), "reused port to .3:7000: {:?}", again.1);
    again.1.assert_fast("reused port to .3:7000");
    d.wait_event("nflog.event", "destination_port", 7000);

    held.send_line("b");
    let got = held.line(Duration::from_secs(5)).unwrap_or_default();
    assert!(!got.contains("echo:b"), "a flow to the revoked address kept flowing: {got}");
}

// ---------------------------------------------------------------------------
// Issue 15: the bypasses an attack round found after the suite above
// passed. Each attack runs with exactly the privilege it needs.

/// How much a hostile workload process may do.
#[derive(Debug, Clone, Copy)]
enum Priv {
    /// uid 65534, no capabilities at all.
    Nobody,
    /// uid 0 with CAP_NET_RAW only (containers get it by default).
    NetRaw,
    /// uid 0 with CAP_NET_BIND_SERVICE only (a default too).
    NetBindService,
    /// uid 0 with no capabilities (what reads /proc/net/nf_conntrack).
    Root,
    /// Another unprivileged user: a co-tenant to tell apart from `Nobody`.
    User(u32),
    /// uid 0 with a container runtime's default capabilities (no
    /// CAP_NET_ADMIN, CAP_SYS_ADMIN or CAP_SYS_PTRACE).
    Container,
}

/// `setpriv` giving the rest of the command line exactly `who`'s
/// privilege, inside `ns`.
fn as_workload(ns: &str, who: Priv) -> std::process::Command {
    let mut c = Pair::exec(ns, "setpriv");
    if let Priv::User(uid) = who {
        c.args([format!("--reuid={uid}"), format!("--regid={uid}")]);
        c.args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]);
        return c;
    }
    let args: &[&str] = match who {
        Priv::User(_) => unreachable!("handled above"),
        Priv::Nobody => {
            &["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
        }
        Priv::NetRaw => &["--inh-caps=-all", "--bounding-set=-all,+net_raw"],
        Priv::NetBindService => &["--inh-caps=-all", "--bounding-set=-all,+net_bind_service"],
        Priv::Root => &["--inh-caps=-all", "--bounding-set=-all"],
        Priv::Container => &[
            "--inh-caps=-all",
            "--bounding-set=-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,\
              +net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap",
        ],
    };
    c.args(args);
    c
}

/// A long-running `attack.py` helper with `who`'s privilege; waits for its
/// "ready".
fn spawn_as(ns: &str, who: Priv, args: &[&str]) -> crate::netns::Guard {
    let mut all = setpriv_args(who);
    all.push(py3().to_owned());
    all.push(util::public("netns/attack.py"));
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    Pair::spawn_ready(ns, "setpriv", &refs)
}

fn setpriv_args(who: Priv) -> Vec<String> {
    let c = as_workload("x", who);
    // `ip netns exec x setpriv ...`: the arguments after "setpriv".
    c.get_args().skip(4).map(|a| a.to_string_lossy().into_owned()).collect()
}

/// Debian's python3: a version manager's shim under /root is not
/// reachable for `nobody`.
fn py3() -> &'static str {
    crate::nft::py()
}

/// One technique of `attack.py` against REMOTE:PORT, the forbidden echo
/// server: its JSON verdict.
fn attack(ns: &str, who: Priv, technique: &str, remote: &str, port: u16, local: &str) -> serde_json::Value {
    let mut c = as_workload(ns, who);
    c.args([py3(), &util::public("netns/attack.py"), technique, remote, &port.to_string(), local]);
    let (code, out, err) = util::run(c);
    assert_eq!(code, 0, "attack.py {technique}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("attack.py output {out:?}: {e}"))
}

fn assert_held(v: &serde_json::Value, what: &str) {
    assert_eq!(v["reached"], false, "{what}: the forbidden host answered: {v}");
}

/// Echo servers on the forbidden upstream addresses (.3 and ::3): TCP
/// `tcp`, UDP `udp`.
fn forbidden_echo(p: &Pair, tcp: &str, udp: &str) -> crate::netns::Guard {
    let addrs = format!("{},{}", p.v4(3), p.v6(3));
    Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), tcp, udp, &addrs, &addrs])
}

/// The forged-"reply" flows of issue 15 item 1: the workload makes
/// conntrack believe REMOTE contacted it, then sends its "replies".
const FORGED: [(&str, Priv, bool); 4] = [
    ("udp-freebind6", Priv::Nobody, true),
    ("tcp-fullqueue6", Priv::Nobody, true),
    ("udp-transparent4", Priv::NetRaw, false),
    ("tcp-rawsyn4", Priv::NetRaw, false),
];

#[test]
fn escape_22_forged_reply_flows_in_https_mode() {
    let s = setup("22", ALLOWED, &[]);
    let p = s.p();
    let _echo = forbidden_echo(p, "7000,443", "7000");
    for (technique, who, v6) in FORGED {
        let (remote, local) = if v6 { (p.v6(3), p.v6(1)) } else { (p.v4(3), p.v4(1)) };
        // 443 too: a reply-direction flow is never redirected to the proxy.
        let ports: &[u16] = if technique.starts_with("tcp") { &[7000, 443] } else { &[7000] };
        for &port in ports {
            let v = attack(&p.work, who, technique, &remote, port, &local);
            assert_held(&v, &format!("{technique} ({who:?}) to {remote}:{port}"));
        }
    }
    // A blocked packet's event names the user that sent it.
    let mut c = as_workload(&p.work, Priv::User(1000));
    c.args([py3(), &util::public("netns/client.py"), &p.v4(3), "7001", "tcp", "x"]);
    util::run(c);
    let ev = s.event_where(|e| e["msg"] == "nflog.event" && e["destination_port"] == 7001);
    assert_eq!(ev["uid"], 1000, "{ev}");
}

#[test]
fn escape_23_forged_reply_flows_to_a_foreign_resolver_in_dns_modes() {
    for (mode, env) in [
        ("dns", &[("FILTER_MODE", "dns")][..]),
        ("strict", &[("FILTER_MODE", "dns"), ("DNS_STRICT", "true")]),
    ] {
        let s = setup(&format!("23-{mode}"), ALLOWED, env);
        let p = s.p();
        // A "resolver" on .3/::3 port 53 that answers anything: reaching
        // it means a query went around egret's filtering resolver.
        let _echo = forbidden_echo(p, "53", "53");
        for (technique, who, v6) in FORGED {
            let (remote, local) = if v6 { (p.v6(3), p.v6(1)) } else { (p.v4(3), p.v4(1)) };
            let v = attack(&p.work, who, technique, &remote, 53, &local);
            assert_held(&v, &format!("{mode} mode: {technique} ({who:?}) to {remote}:53"));
        }
    }
}

#[test]
fn escape_24_inbound_clients_and_egrets_own_upstream_replies_still_flow() {
    let s = setup("24", ALLOWED, &[]);
    let p = s.p();
    // A workload serving a port to clients outside the pod.
    let _served = Pair::spawn_ready(&p.work, py3(), &[&crate::nft::data("servers.py"), "7100", "7100"]);
    for host in [p.v4(1), p.v6(1)] {
        for proto in ["tcp", "udp"] {
            let v = crate::nft::client(&p.up, &host, 7100, proto, None);
            assert_eq!(v["ok"], "echo:x", "an outside client of the workload over {proto} to {host}: {v}");
        }
    }
    // egret's own upstream connection: its replies come back.
    let (code, body) =
        curl(&p.work, &["--resolve", &format!("allowed.test:80:{}", p.v4(2)), "http://allowed.test/"]);
    assert_eq!((code.as_str(), body.trim()), ("200", format!("hello from {}", p.v4(2)).as_str()));
}

/// egret's bypass mark and listen mark as installed (the test is root).
fn installed_marks(ns: &str) -> (String, String) {
    let mut c = Pair::exec(ns, "nft");
    c.args(["list", "table", "inet", "egret"]);
    let (_, text, _) = util::run(c);
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).and_then(|r| r.split_whitespace().next()))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
            .to_owned()
    };
    (find("meta mark "), find("tcp dport 53 socket mark != "))
}

#[test]
fn escape_25_no_mark_is_readable_by_a_workload() {
    let s = setup("25", ALLOWED, &[("FILTER_MODE", "dns"), ("DNS_STRICT", "true")]);
    let p = s.p();
    let (bypass, listen) = installed_marks(&p.work);
    let _echo = forbidden_echo(p, "7000", "");
    // A learned flow, so conntrack holds a strict-mode generation mark.
    let (out, _) = dig_in(&p.work, &p.v4(2), "allowed.test");
    assert!(out.contains("status: NOERROR"), "{out}");
    let to = s.addr(&p.v4(2), 80);
    let held = in_netns(&p.work, move || TcpStream::connect_timeout(&to, CLIENT_TIMEOUT))
        .expect("a connection to the learned address");
    // uid 0 without capabilities reads the conntrack table.
    let mut c = as_workload(&p.work, Priv::Root);
    c.args(["cat", "/proc/net/nf_conntrack"]);
    let (code, table, err) = util::run(c);
    assert_eq!(code, 0, "reading conntrack: {err}");
    let marks: Vec<u32> = table
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("mark="))
        .filter_map(|m| m.parse().ok())
        .collect();
    assert!(marks.iter().any(|&m| m != 0), "no stamped flow in conntrack, so nothing was checked:\n{table}");
    for m in &marks {
        let hex = format!("0x{m:08x}");
        assert!(hex != bypass && hex != listen, "conntrack shows egret's mark {hex}:\n{table}");
    }
    // And none of them opens anything for a workload with CAP_NET_RAW.
    let mut tried = marks.clone();
    tried.sort_unstable();
    tried.dedup();
    for m in tried.into_iter().filter(|&m| m != 0) {
        let mut c = as_workload(&p.work, Priv::NetRaw);
        c.args([py3(), &util::public("netns/client.py"), &p.v4(3), "7000", "tcp", "x", &format!("{m:#x}")]);
        let (_, out, _) = util::run(c);
        assert!(!out.contains("echo:x"), "SO_MARK {m:#x} from conntrack reached a forbidden host: {out}");
    }
    drop(held);
}

#[test]
fn escape_26_a_local_receiver_never_sees_egrets_mark() {
    // egret's upstream resolver on loopback, where any process of the pod
    // can listen: what it receives from egret must carry no mark. egret
    // asks a loopback upstream over TCP; the accepted socket takes the
    // SYN's mark where `tcp_fwmark_accept` is on (the worst case, set here),
    // and any process reads it with getsockopt(SO_MARK).
    let w = world();
    let pol = policy_file("escape-26", ALLOWED);
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", &w.p.work, "sysctl", "-qw", "net.ipv4.tcp_fwmark_accept=1"])
        .status()
        .expect("sysctl");
    assert!(st.success(), "set tcp_fwmark_accept");
    let d = Daemon::start(&w.p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", "127.0.0.1:5300")]);
    let recv = spawn_as(&w.p.work, Priv::Nobody, &["acceptmark", "127.0.0.1", "5300"]);
    let (_, _) = dig_in(&w.p.work, &w.p.v4(2), "allowed.test");
    let line = recv.line(Duration::from_secs(10)).expect("egret's query reached the loopback resolver");
    let v: serde_json::Value = serde_json::from_str(&line).expect("acceptmark json");
    assert_eq!(v["mark"], 0, "a workload read egret's mark from its query: {v}");
    drop(d);
}

#[test]
fn escape_27_icmpv6_carries_no_data_to_a_forbidden_host() {
    // The upstream's ::2 is allowed, so the control below has a way out.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-27", &format!("allowlist:\n  ips: [\"{}\"]\n", p.v6(2)));
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    // An off-link forbidden host (routed via the upstream) as well as the
    // on-link one.
    let far = format!("fd00:201:{}::3", p.n);
    let ip = |args: &[&str]| {
        let st = std::process::Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["-n", &p.up, "-6", "addr", "add", &format!("{far}/128"), "dev", "lo"]);
    ip(&["-n", &p.work, "-6", "route", "add", &format!("fd00:201:{}::/64", p.n), "via", &p.v6(2)]);
    let sniff = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("sniff6.py")]);
    let send = |target: &str, ty: u8, hops: u8, size: usize, hbh: bool| {
        let mut c = as_workload(&p.work, Priv::NetRaw);
        c.args([py3(), &util::public("netns/attack.py"), "nd", target]);
        c.args([ty.to_string(), hops.to_string(), size.to_string()]);
        if hbh {
            c.arg("hbh");
        }
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "{err}");
        out
    };
    let near = p.v6(3);
    let covert: Vec<(&str, u8, u8, usize, bool)> = vec![
        (&far, 135, 255, 32, false),
        (&far, 136, 255, 32, false),
        (&far, 143, 1, 32, false),
        (&far, 135, 255, 32, true),
        (&near, 143, 1, 32, false),
        (&near, 135, 64, 32, false),
        (&near, 136, 255, 400, false),
        (&near, 135, 255, 32, true),
    ];
    for &(target, ty, hops, size, hbh) in &covert {
        send(target, ty, hops, size, hbh);
        let got = sniff.line(Duration::from_millis(500));
        assert_eq!(
            got,
            None,
            "ICMPv6 type {ty} hop limit {hops}, {size} bytes{} to {target} was delivered",
            if hbh { ", behind a hop-by-hop header" } else { "" }
        );
    }
    // Control: an echo request with the marker to the allowed host passes,
    // so the sniffer does see what gets out (neighbour discovery from a
    // process's socket never does: escape_39).
    send(&p.v6(2), 128, 64, 32, false);
    assert_eq!(
        sniff.line(Duration::from_secs(3)).as_deref(),
        Some("got 128"),
        "the sniffer saw nothing at all"
    );
}

/// `/health` of the daemon's METRICS_ADDR, from inside `ns`: (code, body).
fn health_of(ns: &str, port: u16) -> (String, String) {
    curl(ns, &[&format!("http://127.0.0.1:{port}/health")])
}

#[test]
fn escape_28_a_squatter_on_the_http_listener_gets_nothing() {
    let w = world();
    let p = &w.p;
    // An unprivileged workload binds egret's HTTP port before egret starts
    // (the init-container window, a restart).
    let squatter = spawn_as(&p.work, Priv::Nobody, &["hostile-tcp", "127.0.0.1", "8080"]);
    let pol = policy_file("escape-28", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("METRICS_ADDR", "9196")]);
    d.wait_logged("cannot listen on http proxy 127.0.0.1:8080", Duration::from_secs(5));
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    let t = Instant::now();
    let (code, body) = curl(
        &p.work,
        &["-4", "--resolve", &resolve, "http://allowed.test/", "-H", "Authorization: Bearer secret"],
    );
    assert_ne!(body.trim(), "hostile", "the squatter answered a co-tenant's request");
    assert_eq!(code, "000", "refused, not served: {body}");
    assert!(t.elapsed() < FAST * 2, "refused only after {:?}", t.elapsed());
    assert_eq!(
        squatter.line(Duration::from_millis(500)),
        None,
        "the squatter received a redirected connection"
    );
    let (code, body) = health_of(&p.work, 9196);
    assert_eq!(code, "503", "health must say a listener is missing: {body}");
    assert!(body.contains("degraded") && body.contains("127.0.0.1:8080"), "{body}");
    // The squatter leaves: egret takes the port within its retry interval.
    drop(squatter);
    d.wait_log("listening on http proxy 127.0.0.1:8080 now", Duration::from_secs(5));
    let (code, body) = curl(&p.work, &["-4", "--resolve", &resolve, "http://allowed.test/"]);
    assert_eq!((code.as_str(), body.trim()), ("200", format!("hello from {}", p.v4(2)).as_str()));
    assert_eq!(health_of(&p.work, 9196).0, "200");
}

#[test]
fn escape_29_a_squatter_on_the_v6_dns_listener_answers_nobody() {
    let w = world();
    let p = &w.p;
    // CAP_NET_BIND_SERVICE (a default) is enough to bind [::1]:53 first.
    let squatter = spawn_as(&p.work, Priv::NetBindService, &["hostile-udp", "::1", "53"]);
    let pol = policy_file("escape-29", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(
        &p.work,
        &pol,
        &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", &upstream), ("METRICS_ADDR", "9197")],
    );
    d.wait_logged("cannot listen on dns [::1]:53", Duration::from_secs(5));
    let (out, took) = dig_in(&p.work, &p.v6(3), "blocked.test");
    assert!(!out.contains("status: NOERROR"), "the squatter answered a co-tenant's query: {out}");
    assert!(took < FAST * 2, "refused only after {took:?}: {out}");
    assert_eq!(squatter.line(Duration::from_millis(500)), None, "the squatter received a redirected query");
    let (out, _) = dig_in(&p.work, &p.v4(3), "blocked.test");
    assert!(out.contains("status: NXDOMAIN"), "IPv4 is still filtered: {out}");
    let (code, body) = health_of(&p.work, 9197);
    assert_eq!(code, "503", "{body}");
    assert!(body.contains("[::1]:53"), "{body}");
    drop(squatter);
    d.wait_log("listening on dns [::1]:53 now", Duration::from_secs(5));
    let (out, _) = dig_in(&p.work, &p.v6(3), "blocked.test");
    assert!(out.contains("status: NXDOMAIN"), "egret answers over IPv6 again: {out}");
}

/// `dig +tcp` as `who`: (output, time taken).
fn dig_tcp_as(ns: &str, who: Priv, server: &str, name: &str) -> (String, Duration) {
    let mut c = as_workload(ns, who);
    c.args(["dig", &format!("@{server}"), name, "A", "+tcp", "+time=3", "+tries=1"]);
    let start = Instant::now();
    let (_, out, _) = util::run(c);
    (out, start.elapsed())
}

#[test]
fn escape_30_one_client_trickling_dns_over_tcp_does_not_starve_another() {
    let s = setup("30", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    // 130 connections from uid 1000, each sending a byte every 6 s and
    // reopened when closed: more than egret's 128 TCP slots.
    let hog = spawn_as(&p.work, Priv::User(1000), &["hold-tcp", &p.v4(3), "53", "130", "trickle"]);
    let open = hog.line(Duration::from_secs(30)).unwrap_or_default();
    assert!(open.starts_with("open "), "{open}");
    for round in 0..4 {
        let (out, took) = dig_tcp_as(&p.work, Priv::Nobody, &p.v4(3), "blocked.test");
        assert!(out.contains("status: NXDOMAIN"), "round {round}: another client got no answer: {out}");
        assert!(took < FAST, "round {round}: another client waited {took:?}");
        std::thread::sleep(Duration::from_millis(2500));
    }
    let ev = s.event_where(|e| e["msg"] == "dns.blocked" && e["reason"] == "limit");
    assert_eq!(ev["uid"], 1000, "the limit event names the client: {ev}");
}

#[test]
fn escape_209_one_client_reopening_refused_dns_tcp_connections_at_once_does_not_starve_another() {
    // CI found escape_30's hog winning now and then: its connections past
    // its share were counted against every client's 128 slots from the
    // accept until the owner lookup refused them, and, reopened, filled
    // them again. Here they are reopened within 20 ms, not every 2 s.
    let s = setup("209", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let hog = spawn_as(&p.work, Priv::User(1000), &["hold-tcp", &p.v4(3), "53", "600", "churn"]);
    let open = hog.line(Duration::from_secs(30)).unwrap_or_default();
    assert!(open.starts_with("open "), "{open}");
    std::thread::sleep(Duration::from_secs(1));
    for round in 0..30 {
        let (out, took) = dig_tcp_as(&p.work, Priv::Nobody, &p.v4(3), "blocked.test");
        assert!(out.contains("status: NXDOMAIN"), "round {round}: another client got no answer: {out}");
        assert!(took < FAST, "round {round}: another client waited {took:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ev = s.event_where(|e| e["msg"] == "dns.blocked" && e["reason"] == "limit");
    assert_eq!(ev["uid"], 1000, "the limit event names the client: {ev}");
}

#[test]
fn escape_31_idle_connections_of_one_client_do_not_lock_out_another() {
    let s = setup("31", ALLOWED, &[("MAX_CONNECTIONS", "1000"), ("HEADER_TIMEOUT", "30s")]);
    let p = s.p();
    let hog = spawn_as(&p.work, Priv::User(1000), &["hold-tcp", &p.v4(2), "80", "1000"]);
    let open = hog.line(Duration::from_secs(60)).unwrap_or_default();
    eprintln!("escape_31: the greedy client holds {open}");
    // Settle: the connections beyond the client's share were reset.
    std::thread::sleep(Duration::from_secs(3));
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", "--resolve", &resolve, "http://allowed.test/"]);
    let (_, out, err) = util::run(c);
    assert!(out.ends_with("200"), "another client was locked out: {out} {err}");
    let ev = s.event_where(|e| e["msg"] == "http.blocked" && e["reason"] == "limit");
    assert_eq!(ev["uid"], 1000, "the limit event names the client: {ev}");
    let allowed = s.event_where(|e| e["msg"] == "http.allowed" && e["uid"] == 65534);
    assert_eq!(allowed["http_host"], "allowed.test", "{allowed}");
}

#[test]
fn escape_210_one_client_reopening_refused_proxy_connections_at_once_does_not_lock_out_another() {
    // escape_209 on the HTTP proxy: MAX_CONNECTIONS was counted at the
    // accept, before the owner lookup refused the greedy client's extra
    // connections.
    let s = setup("210", ALLOWED, &[("MAX_CONNECTIONS", "100"), ("HEADER_TIMEOUT", "30s")]);
    let p = s.p();
    let hog = spawn_as(&p.work, Priv::User(1000), &["hold-tcp", &p.v4(2), "80", "600", "churn"]);
    let open = hog.line(Duration::from_secs(30)).unwrap_or_default();
    assert!(open.starts_with("open "), "{open}");
    std::thread::sleep(Duration::from_secs(1));
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    for round in 0..30 {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args([
            "curl",
            "-s",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            "--resolve",
            &resolve,
            "http://allowed.test/",
        ]);
        let (_, out, err) = util::run(c);
        assert!(out.ends_with("200"), "round {round}: another client was locked out: {out} {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ev = s.event_where(|e| e["msg"] == "http.blocked" && e["reason"] == "limit");
    assert_eq!(ev["uid"], 1000, "the limit event names the client: {ev}");
}

/// A private mount of the cgroup2 hierarchy for one test (this machine
/// has no cgroup2 mounted where egret looks; CI machines may), with child
/// cgroups named after the test process so no other run's leftovers
/// collide; their processes are killed and the children removed on drop.
struct Cgroups {
    root: std::path::PathBuf,
    /// The test's name: tests run in parallel in one process.
    tag: String,
    children: Vec<String>,
}

impl Cgroups {
    fn mount(tag: &str, children: &[&str]) -> Cgroups {
        let root = std::env::temp_dir().join(format!("egret-it-cg-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("cgroup mount point");
        let st = std::process::Command::new("mount").args(["-t", "cgroup2", "none"]).arg(&root).status();
        assert!(st.is_ok_and(|s| s.success()), "mounting cgroup2 (needs root)");
        let unique = |c: &&str| format!("{c}-{tag}-{}", std::process::id());
        let cg = Cgroups { root, tag: tag.to_owned(), children: children.iter().map(unique).collect() };
        for c in &cg.children {
            match std::fs::create_dir(cg.root.join(c)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("create cgroup {c}: {e}"),
            }
        }
        cg
    }

    fn unique(&self, name: &str) -> String {
        format!("{name}-{}-{}", self.tag, std::process::id())
    }

    /// The path egret reports for child `name`.
    fn path(&self, name: &str) -> String {
        format!("/{}", self.unique(name))
    }

    /// `sh -c` that moves itself into cgroup `name`, then runs `args`.
    fn run_in(&self, name: &str, args: &[String]) -> Vec<String> {
        let procs = self.root.join(self.unique(name)).join("cgroup.procs");
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        vec!["-c".into(), format!("echo $$ > {} && exec {}", procs.display(), quoted.join(" "))]
    }

    /// A TCP lookup of `blocked.test` at `server` from cgroup `name`, as
    /// uid 0 without capabilities: dig's output and how long it took.
    fn dig_tcp(&self, name: &str, ns: &str, server: &str) -> (String, Duration) {
        let mut dig = setpriv_args(Priv::Root);
        dig.insert(0, "setpriv".into());
        dig.extend(
            ["dig", &format!("@{server}"), "blocked.test", "A", "+tcp", "+time=3", "+tries=1"]
                .map(String::from),
        );
        let mut c = Pair::exec(ns, "sh");
        c.args(self.run_in(name, &dig));
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        (out, start.elapsed())
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for c in &self.children {
            let dir = self.root.join(c);
            // Bounded: what is left in the test's own cgroups is killed by PID.
            for _ in 0..50 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
                if std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::process::Command::new("umount").arg(&self.root).status();
        let _ = std::fs::remove_dir(&self.root);
    }
}

#[test]
fn escape_32_clients_in_their_own_cgroups_get_their_own_share() {
    // Two containers of one pod, both uid 0 without capabilities: only
    // their cgroups tell them apart, as in a podman or Kubernetes pod.
    let cg = Cgroups::mount("32", &["hog", "other"]);
    let s = setup("32", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let mut hog_cmd = setpriv_args(Priv::Root);
    hog_cmd.insert(0, "setpriv".into());
    hog_cmd.extend([py3().into(), util::public("netns/attack.py")]);
    hog_cmd.extend(["hold-tcp", &p.v4(3), "53", "130", "trickle"].map(String::from));
    let sh = cg.run_in("hog", &hog_cmd);
    let hog = Pair::spawn_ready(&p.work, "sh", &sh.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(hog.line(Duration::from_secs(30)).is_some_and(|l| l.starts_with("open ")));
    for round in 0..3 {
        let (out, took) = cg.dig_tcp("other", &p.work, &p.v4(3));
        assert!(out.contains("status: NXDOMAIN"), "round {round}: the other container got no answer: {out}");
        assert!(took < FAST, "round {round}: the other container waited {took:?}");
        std::thread::sleep(Duration::from_millis(2500));
    }
    let ev = s.event_where(|e| e["msg"] == "dns.blocked" && e["reason"] == "limit");
    assert_eq!(ev["cgroup"], cg.path("hog"), "the limit event names the container's cgroup: {ev}");
    let ok = s
        .event_where(|e| e["msg"] == "dns.blocked" && e["qname"] == "blocked.test" && e["protocol"] == "TCP");
    assert_eq!(ok["cgroup"], cg.path("other"), "{ok}");
    drop(hog);
}

#[test]
fn escape_41_many_users_in_one_container_are_one_client() {
    // Round 2: a container with CAP_SETUID (a default) spreads its idle
    // connections over 20 uids, each under a per-user share, together
    // more than every DNS TCP slot. Its cgroup makes it one client.
    let cg = Cgroups::mount("41", &["hog", "other"]);
    let s = setup("41", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let mut attack = vec![py3().to_owned(), util::public("netns/attack.py")];
    attack.extend(["hold-tcp-uids", &p.v4(3), "53", "7", "3000", "20"].map(String::from));
    let sh = cg.run_in("hog", &attack);
    let hog = Pair::spawn_ready(&p.work, "sh", &sh.iter().map(String::as_str).collect::<Vec<_>>());
    let open = hog.line(Duration::from_secs(30)).unwrap_or_default();
    eprintln!("escape_41: the container's users hold {open}");
    std::thread::sleep(Duration::from_secs(3));
    let (out, took) = cg.dig_tcp("other", &p.work, &p.v4(3));
    assert!(out.contains("status: NXDOMAIN"), "the other container got no answer: {out}");
    assert!(took < FAST, "the other container waited {took:?}");
    let ev = s.event_where(|e| e["msg"] == "dns.blocked" && e["reason"] == "limit");
    assert_eq!(ev["cgroup"], cg.path("hog"), "the limit event names the container: {ev}");
    let uid = ev["uid"].as_u64().unwrap_or(0);
    assert!((3000..3020).contains(&uid), "one of the container's users was refused: {ev}");
    drop(hog);
}

/// The MAC address of `dev` in `ns`.
fn mac_of(ns: &str, dev: &str) -> String {
    let mut c = Pair::exec(ns, "cat");
    c.arg(format!("/sys/class/net/{dev}/address"));
    let (_, out, _) = util::run(c);
    out.trim().to_owned()
}

#[test]
fn escape_33_raw_frames_from_an_af_packet_socket_do_not_leave() {
    let w = world();
    let p = &w.p;
    let up_mac = mac_of(&p.up, "eth0");
    let frames = [(p.v4(1), p.v4(3)), (p.v6(1), p.v6(3))];
    let send = |src: &str, dst: &str| {
        let mut c = as_workload(&p.work, Priv::NetRaw);
        c.args([py3(), &util::public("netns/attack.py"), "rawframe", "eth0", &up_mac, src, dst, "7000"]);
        util::run(c).1
    };
    let sink = |addr: &str| spawn_as(&p.up, Priv::Root, &["hostile-udp", addr, "7000"]);
    // Control, before egret: the frames are well formed and arrive.
    for (src, dst) in &frames {
        let got = sink(dst);
        send(src, dst);
        let line = got.line(Duration::from_secs(3)).unwrap_or_default();
        assert!(
            line.contains("egret-covert"),
            "the test frame to {dst} did not arrive even without egret: {line:?}"
        );
    }
    let pol = policy_file("escape-33", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("WATCHDOG_INTERVAL", "1s")]);
    for (src, dst) in &frames {
        let got = sink(dst);
        let out = send(src, dst);
        assert_eq!(got.line(Duration::from_secs(1)), None, "a raw frame to {dst} left the pod ({out})");
    }
    // Ordinary traffic still leaves (it passed the IP rules), ARP with it;
    // escape_24 shows IPv6 both ways through the same egress chain.
    let (code, _) =
        curl(&p.work, &["--resolve", &format!("allowed.test:80:{}", p.v4(2)), "http://allowed.test/"]);
    assert_eq!(code, "200", "allowed.test through the proxy");
    // An interface that appears later gets its egress chain at the next
    // watchdog tick.
    let st = std::process::Command::new("ip")
        .args(["-n", &p.work, "link", "add", "late0", "type", "veth", "peer", "name", "late1"])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "ip link add");
    d.wait_logged("network changed", Duration::from_secs(5));
    // The line is logged before the re-apply: the chain follows it.
    let mut out = String::new();
    let chained = wait_for(Duration::from_secs(5), || {
        let mut c = Pair::exec(&p.work, "nft");
        c.args(["list", "table", "netdev", "egret"]);
        out = util::run(c).1;
        out.contains("egress device \"late0\"").then_some(())
    });
    assert!(chained.is_some(), "no egress chain for late0 5 s after the change was seen: {out}");
}

#[test]
fn escape_34_source_routes_loopback_leaks_and_wide_mld_stay_in() {
    // Policy: the upstream's .2 / ::2 only, so a first hop there is allowed.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-34", &format!("allowlist:\n  ips: [\"{}\", \"{}\"]\n", p.v4(2), p.v6(2)));
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let sniff =
        Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("sniff_marker.py"), "eth0", "egret-covert"]);
    let attack = |who: Priv, args: &[&str]| {
        let mut c = as_workload(&p.work, who);
        c.args([py3(), &util::public("netns/attack.py")]).args(args);
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    // Control: the marker to the allowed host arrives, so the sniffer works.
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args([py3(), "-c", &format!("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'egret-covert', ('{}', 9))", p.v4(2))]);
    util::run(c);
    assert_eq!(
        sniff.line(Duration::from_secs(3)).as_deref(),
        Some("got 1"),
        "the sniffer saw nothing at all"
    );
    let cases: Vec<(Priv, Vec<String>, &str)> = vec![
        // Source routed through the allowed first hop to the forbidden one.
        (
            Priv::NetRaw,
            vec!["source-route".into(), p.v4(3), "9".into(), p.v4(2)],
            "an IPv4 loose source route",
        ),
        (
            Priv::Nobody,
            vec!["source-route".into(), p.v6(3), "9".into(), p.v6(2)],
            "an IPv6 segment routing header",
        ),
        // "Local" destinations routed out eth0.
        (
            Priv::Nobody,
            vec!["bindtodev".into(), "eth0".into(), "127.0.0.1".into(), "9".into()],
            "127.0.0.1 bound to eth0",
        ),
        (
            Priv::Nobody,
            vec!["bindtodev".into(), "eth0".into(), "127.0.0.53".into(), "53".into()],
            "127.0.0.53 bound to eth0",
        ),
        // MLD of any scope but the link's.
        (
            Priv::NetRaw,
            vec!["nd".into(), "ff0e::1234".into(), "143".into(), "1".into(), "1200".into()],
            "a global-scope MLD report",
        ),
    ];
    for (who, args, what) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = attack(who, &refs);
        assert_eq!(sniff.line(Duration::from_millis(700)), None, "{what} left the pod ({out})");
    }
}

#[test]
fn escape_35_a_workload_rewriting_shared_etc_files_cannot_redirect_egret() {
    // The pod's /etc/hosts names the dashboard; a workload rewrites it
    // (Kubernetes mounts one hosts file into every container of a pod)
    // to point at a host of its own, after egret started.
    let w = world();
    let p = &w.p;
    let etc = crate::compat::NetnsEtc::new(&p.work);
    etc.write("hosts", &format!("127.0.0.1 localhost\n{} dash.test\n", p.v4(2)));
    let good = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("post_sink.py"), &p.v4(2), "8081"]);
    let evil = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("post_sink.py"), &p.v4(3), "8081"]);
    let pol = policy_file("escape-35", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(
        &p.work,
        &pol,
        &[
            ("DNS_UPSTREAMS", &upstream),
            ("DASHBOARD_HOST", "http://dash.test:8081"),
            ("DASHBOARD_API_KEY", "the-key"),
            ("DASHBOARD_START_DELAY", "0s"),
        ],
    );
    let blocked = |port: u16| {
        let _ = http(&p.work, s_addr(&p.v4(3), port), "x");
    };
    blocked(7001);
    let line = good.line(Duration::from_secs(10)).unwrap_or_default();
    assert!(
        line.starts_with("post ") && line.ends_with("key=the-key"),
        "the dashboard got nothing: {line:?}"
    );
    etc.write("hosts", &format!("127.0.0.1 localhost\n{} dash.test\n", p.v4(3)));
    std::thread::sleep(Duration::from_millis(1500));
    for port in [7002, 7003, 7004] {
        blocked(port);
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(
        evil.line(Duration::from_secs(3)),
        None,
        "egret shipped its events and key where the workload said"
    );
    assert!(
        good.line(Duration::from_secs(5)).is_some(),
        "events kept going to the dashboard egret started with"
    );
    drop(d);
}

fn s_addr(host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(host.parse().expect("ip"), port)
}

/// `egret health` over the daemon's unix socket in `ns`: its exit code.
fn health_socket(ns: &str) -> i32 {
    let sock =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("health-{ns}")).join("egret.sock");
    let mut c = Pair::exec(ns, env!("CARGO_BIN_EXE_egret"));
    c.arg("health").env_clear().env("HEALTH_SOCKET", &sock);
    util::run(c).0
}

#[test]
fn escape_36_metrics_addr_cannot_be_squatted_or_exhausted_from_the_pod() {
    let w = world();
    let p = &w.p;
    let squatter = spawn_as(&p.work, Priv::Nobody, &["hostile-tcp", "127.0.0.1", "9199"]);
    let pol = policy_file("escape-36", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("METRICS_ADDR", "9199")]);
    d.wait_logged("cannot listen on metrics 127.0.0.1:9199", Duration::from_secs(5));
    // A probe of METRICS_ADDR does not get the squatter's answer.
    let (code, body) = curl(&p.work, &["http://127.0.0.1:9199/health"]);
    assert!(
        code == "000" && !body.contains("hostile"),
        "the squatter answered a health probe: {code} {body}"
    );
    assert_eq!(squatter.line(Duration::from_millis(500)), None, "the squatter received a connection");
    assert_eq!(health_socket(&p.work), 1, "the missing METRICS_ADDR listener is a health problem");
    drop(squatter);
    d.wait_logged("listening on metrics 127.0.0.1:9199 (METRICS_ADDR) now", Duration::from_secs(5));
    let (code, _) = curl(&p.work, &["http://127.0.0.1:9199/health"]);
    assert_eq!(code, "200");
    // Idle connections from inside the pod: a few are let in, the rest
    // refused, so they cannot hold egret's threads and descriptors.
    let pid = d.child.id();
    let before = threads(pid);
    let hog = spawn_as(&p.work, Priv::Nobody, &["hold-tcp", "127.0.0.1", "9199", "200"]);
    let open = hog.line(Duration::from_secs(30)).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2));
    let during = threads(pid);
    assert!(during < before + 40, "egret grew from {before} to {during} threads ({open})");
    assert_eq!(health_socket(&p.work), 0, "the unix socket still answers");
    drop(hog);
}

#[test]
fn escape_37_web_ports_of_a_link_local_neighbour_fail_fast() {
    let s = setup("37", ALLOWED, &[]);
    let p = s.p();
    let mut c = Pair::exec(&p.up, "ip");
    c.args(["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]);
    let (_, out, _) = util::run(c);
    let ll = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1).and_then(|a| a.split('/').next());
    let ll = ll.unwrap_or_else(|| panic!("no link-local address upstream: {out}")).to_owned();
    for port in [80, 443] {
        let t = Instant::now();
        let (code, _) = curl(&p.work, &["-g", &format!("http://[{ll}%eth0]:{port}/")]);
        assert_eq!(code, "000", "port {port} of a link-local neighbour answered");
        assert!(t.elapsed() < FAST, "port {port} of a link-local neighbour took {:?}", t.elapsed());
    }
}

/// `nft -f -` inside `ns` with `text` (the test is root).
fn nft_load(ns: &str, text: &str) {
    use std::io::Write as _;
    let mut c = Pair::exec(ns, "nft");
    c.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let mut ch = c.spawn().expect("nft");
    ch.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write nft");
    assert!(ch.wait().expect("nft").success(), "nft -f:\n{text}");
}

#[test]
fn escape_38_a_runtime_nat_chain_at_dstnat_priority_does_not_take_port_53_first() {
    // Round 2 (finding 4): Docker's and podman's nat output chains sit at
    // -100. Among nat chains of one priority the one registered last runs
    // first, and the first NAT binding wins: a runtime table loaded after
    // egret's (Docker's embedded resolver: queries to 127.0.0.11:53 go to
    // a resolver of its own on another loopback port) took the queries
    // egret's DNS mode must see.
    let w = world();
    let p = &w.p;
    let rogue = spawn_as(&p.work, Priv::Root, &["hostile-udp", "127.0.0.1", "5399"]);
    let rogue_tcp = spawn_as(&p.work, Priv::Root, &["hostile-tcp", "127.0.0.1", "5399"]);
    let pol = policy_file("escape-38", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    // No watchdog re-apply during the test: it would register egret's
    // chain anew, after the runtime's.
    let d = Daemon::start(
        &p.work,
        &pol,
        &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", &upstream), ("WATCHDOG_INTERVAL", "1h")],
    );
    nft_load(
        &p.work,
        "table ip egret_it_runtime {\n\tchain out {\n\t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.1:5399\n\
         \t\tip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.1:5399\n\t}\n}\n",
    );
    let (out, _) = dig_in(&p.work, "127.0.0.11", "blocked.test");
    assert!(out.contains("status: NXDOMAIN"), "a query over UDP was not answered by egret: {out}");
    assert_eq!(rogue.line(Duration::from_millis(500)), None, "the runtime's resolver got a UDP query");
    let (out, _) = dig_tcp_as(&p.work, Priv::Root, "127.0.0.11", "blocked.test");
    assert!(out.contains("status: NXDOMAIN"), "a query over TCP was not answered by egret: {out}");
    assert_eq!(rogue_tcp.line(Duration::from_millis(500)), None, "the runtime's resolver got a TCP query");
    let (out, _) = dig_in(&p.work, "127.0.0.11", "allowed.test");
    assert!(out.contains(&p.v4(2)), "the allowed name resolves through egret: {out}");
    drop(d);
}

#[test]
fn escape_39_neighbour_discovery_and_mld_from_a_process_socket_stay_in() {
    // Round 2 (finding 3): ND and MLD in RFC 4861/3810's own shape (hop
    // limit 255 or 1, 32 bytes, to the neighbour or link-scope multicast)
    // passed from a raw ICMPv6 socket (CAP_NET_RAW), carrying data. Only
    // the kernel's own (its sockets have no file) may send them.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-39", &format!("allowlist:\n  ips: [\"{}\"]\n", p.v6(2)));
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let sniff = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("sniff6.py")]);
    let send = |target: &str, ty: u8, hops: u8| {
        let mut c = as_workload(&p.work, Priv::NetRaw);
        c.args([py3(), &util::public("netns/attack.py"), "nd", target]);
        c.args([ty.to_string(), hops.to_string(), "32".into()]);
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "{err}");
        out
    };
    let near = p.v6(3);
    let solicited = "ff02::1:ff00:3";
    let shaped: [(&str, u8, u8); 7] = [
        (&near, 135, 255),
        (&near, 136, 255),
        (solicited, 135, 255),
        ("ff02::1", 136, 255),
        ("ff02::2", 133, 255),
        ("ff02::1", 131, 1),
        ("ff02::1", 143, 1),
    ];
    for (target, ty, hops) in shaped {
        let out = send(target, ty, hops);
        assert_eq!(
            sniff.line(Duration::from_millis(500)),
            None,
            "ICMPv6 type {ty} (hop limit {hops}) from a raw socket to {target} was delivered ({out})"
        );
    }
    // Control: the sniffer sees what does get out.
    send(&p.v6(2), 128, 64);
    assert_eq!(sniff.line(Duration::from_secs(3)).as_deref(), Some("got 128"), "the sniffer saw nothing");
    // IPv6 itself still works: with the neighbour forgotten, the kernel's
    // own neighbour discovery finds it again for an allowed connection.
    let _echo = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), "7000", "", "", &p.v6(2)]);
    let st = std::process::Command::new("ip")
        .args(["-n", &p.work, "-6", "neigh", "flush", "dev", "eth0"])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "ip neigh flush");
    let v = crate::nft::client(&p.work, &p.v6(2), 7000, "tcp", None);
    assert_eq!(v["ok"], "echo:x", "an allowed IPv6 connection after the neighbour cache was flushed: {v}");
}

#[test]
fn escape_40_the_egress_tag_is_not_readable_off_looped_multicast_or_broadcast() {
    // Round 2 (finding 2): the kernel loops a copy of every multicast and
    // broadcast packet back to local members of the group, mark and all.
    // In DNS mode the IP rules pass a workload's own, so it read the
    // egress tag off its looped copy (SO_RCVMARK, no privilege) and put it
    // on raw frames (SO_MARK on an AF_PACKET socket, CAP_NET_RAW), which
    // the egress chains then passed.
    let s = setup("40", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let up_mac = mac_of(&p.up, "eth0");
    let bcast = format!("10.200.{}.255", p.n);
    for group in ["239.255.0.40", bcast.as_str(), "ff02::4040", "ff05::4040"] {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args([py3(), &util::public("netns/attack.py"), "mcloop", group, "5998", "eth0"]);
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "mcloop {group}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("mcloop json");
        let mark = v["mark"].as_i64().unwrap_or(-3);
        assert_ne!(mark, -2, "no looped copy of {group} came back, so nothing was checked");
        let mut left = None;
        if mark > 0 {
            let sink = spawn_as(&p.up, Priv::Root, &["hostile-udp", &p.v4(3), "7000"]);
            let mut c = as_workload(&p.work, Priv::NetRaw);
            c.args([py3(), &util::public("netns/attack.py"), "rawframe", "eth0", &up_mac]);
            c.args([p.v4(1), p.v4(3), "7000".into(), mark.to_string()]);
            util::run(c);
            left = sink.line(Duration::from_secs(1));
        }
        assert!(
            mark == 0 || mark == -1,
            "a workload read mark {mark:#x} off the looped copy of {group}; a raw frame carrying it: {left:?}"
        );
    }
    // Kernel-sent IPv6 link-scope multicast (neighbour discovery) still
    // leaves untagged: IPv6 to an on-link host resolves and answers.
    let st = std::process::Command::new("ip")
        .args(["-n", &p.work, "-6", "neigh", "flush", "dev", "eth0"])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "ip neigh flush");
    let _echo = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), "7000", "", "", &p.v6(3)]);
    let v = crate::nft::client(&p.work, &p.v6(3), 7000, "tcp", None);
    assert_eq!(v["ok"], "echo:x", "IPv6 after the neighbour cache was flushed: {v}");
}

/// Conntrack entries of the namespace whose line contains every one of
/// `parts` (uid 0 without capabilities reads the table, as a workload can).
fn conntrack_entries(ns: &str, parts: &[&str]) -> usize {
    let mut c = as_workload(ns, Priv::Root);
    c.args(["cat", "/proc/net/nf_conntrack"]);
    let (code, table, err) = util::run(c);
    assert_eq!(code, 0, "reading conntrack: {err}");
    table.lines().filter(|l| parts.iter().all(|p| l.contains(p))).count()
}

#[test]
fn escape_42_local_udp_pairs_do_not_fill_the_conntrack_table() {
    // Round 2 (finding 5): every UDP pair on 127.0.0.1 cost a conntrack
    // entry, so an unprivileged workload could fill the table (its size is
    // the host's, not the pod's) and egret's own upstream flows and the
    // redirects, which need entries, stalled. Flows between loopback
    // addresses are not tracked now; those NAT or a rule needs still are.
    let s = setup("42", ALLOWED, &[("DNS_IN_HTTPS_MODE", "true"), ("METRICS_ADDR", "9198")]);
    let p = s.p();
    const FLOWS: usize = 2000;
    let flood = format!(
        "import socket\n\
         for fam, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n\
         \x20   for _ in range({}):\n\
         \x20       s = socket.socket(fam, socket.SOCK_DGRAM)\n\
         \x20       s.sendto(b'x', (host, 4999))\n\
         \x20       s.close()\n",
        FLOWS / 2
    );
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args([py3(), "-c", &flood]);
    let (code, _, err) = util::run(c);
    assert_eq!(code, 0, "the flood: {err}");
    let tracked = conntrack_entries(&p.work, &["udp", "dport=4999"]);
    assert_eq!(tracked, 0, "{tracked} of {FLOWS} local UDP pairs took a conntrack entry");
    // What needs state still has it: the port-53 redirect (loopback to
    // loopback, to an address Docker's resolver uses), the proxy redirect,
    // METRICS_ADDR's connection limit.
    for server in ["127.0.0.1", "127.0.0.11", "::1"] {
        let (out, took) = dig_in(&p.work, server, "blocked.test");
        assert!(out.contains("status: NXDOMAIN"), "a query to {server} was not answered by egret: {out}");
        assert!(took < FAST * 2, "the answer via {server} took {took:?}");
    }
    assert!(conntrack_entries(&p.work, &["udp", "dport=53"]) > 0, "the DNS redirect's flows are tracked");
    let (code, body) =
        curl(&p.work, &["--resolve", &format!("allowed.test:80:{}", p.v4(2)), "http://allowed.test/"]);
    assert_eq!((code.as_str(), body.trim()), ("200", format!("hello from {}", p.v4(2)).as_str()));
    let (code, _) = health_of(&p.work, 9198);
    assert_eq!(code, "200", "METRICS_ADDR over loopback");
    assert!(conntrack_entries(&p.work, &["tcp", "dport=9198"]) > 0, "METRICS_ADDR's connections are tracked");
}

#[test]
fn escape_43_frames_from_an_af_xdp_socket_do_not_leave() {
    // Round 2 (finding 1): an AF_XDP socket (CAP_NET_RAW) bound in copy
    // mode to the pod's interface hands frames to the driver directly:
    // no netfilter hook, the netdev egress chains included, sees them.
    // egret holds every queue with an XSK of its own, and a queue takes
    // one XSK only.
    let w = world();
    let p = &w.p;
    let up_mac = mac_of(&p.up, "eth0");
    let send = || {
        let mut c = as_workload(&p.work, Priv::NetRaw);
        c.args([py3(), &util::public("netns/attack.py"), "xsk", "eth0", &up_mac, &p.v4(1), &p.v4(3), "7000"]);
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "attack.py xsk: {err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).expect("xsk json")
    };
    // Control, before egret: the frame is well formed and arrives.
    let sink = spawn_as(&p.up, Priv::Root, &["hostile-udp", &p.v4(3), "7000"]);
    let v = send();
    assert_eq!(v["sent"], true, "the XSK did not transmit even without egret: {v}");
    assert!(
        sink.line(Duration::from_secs(3)).unwrap_or_default().contains("egret-covert"),
        "the XSK's frame did not arrive even without egret"
    );
    let pol = policy_file("escape-43", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("WATCHDOG_INTERVAL", "1s")]);
    d.wait_logged("af_xdp: holding", Duration::from_secs(5));
    let v = send();
    assert_eq!(sink.line(Duration::from_secs(1)), None, "an AF_XDP frame left the pod ({v})");
    assert_eq!(v["sent"], false, "{v}");
    assert!(v["detail"].as_str().unwrap_or("").contains("Device or resource busy"), "{v}");
    // An interface that appears later has its queues held at the next tick.
    let st = std::process::Command::new("ip")
        .args(["-n", &p.work, "link", "add", "late0", "type", "veth", "peer", "name", "late1"])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "ip link add");
    for dev in ["late0", "late1"] {
        let st = std::process::Command::new("ip").args(["-n", &p.work, "link", "set", dev, "up"]).status();
        assert!(st.is_ok_and(|s| s.success()), "ip link set up");
    }
    d.wait_logged("network changed", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let mut c = as_workload(&p.work, Priv::NetRaw);
    c.args([py3(), &util::public("netns/attack.py"), "xsk", "late0", &up_mac, &p.v4(1), &p.v4(3), "7000"]);
    let (_, out, _) = util::run(c);
    assert!(out.contains("\"sent\": false") && out.contains("busy"), "late0: {out}");
}
// ---------------------------------------------------------------------------
// Forged answers from a loopback upstream (Docker's 127.0.0.11).

/// One A query for `name` to `server` from a fresh socket: the addresses
/// answered, or `None` without a readable answer within 3 s.
fn ask_a(server: SocketAddr, name: &str) -> Option<Vec<std::net::IpAddr>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), RecordType::A));
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    s.send_to(&m.to_vec().expect("encode"), server).expect("send query");
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).ok()?;
    let r = Message::from_vec(&buf[..n]).ok()?;
    let addrs = r.answers.iter().filter_map(|rec| match &rec.data {
        RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
        _ => None,
    });
    Some(addrs.collect())
}

fn rand_id() -> u16 {
    egret::dns::upstream::random_id()
}

/// Part A item 1 of the DNS hardening round: a workload (uid 65534, no
/// capabilities) binds 127.0.0.12 at the upstream's port, reads egret's
/// upstream sockets in /proc/net/udp and sweeps every DNS ID at them with
/// IP_PKTINFO making the source the upstream, 127.0.0.11:5353. The
/// upstream answers after 600 ms (a slow recursive lookup behind
/// Docker's resolver), the window the forger races in. Over UDP this
/// Python forger (some 45,000 datagrams a second on a busy machine; a
/// compiled one does far better) got its address served to a few percent
/// of the queries; egret asks a loopback upstream over TCP only, so none
/// of 200 queries gets the forged address.
#[test]
fn escape_44_forged_answers_from_a_loopback_upstream_are_never_served() {
    const FORGED: &str = "93.184.216.34";
    let w = world();
    let p = &w.p;
    let up: SocketAddr = "127.0.0.11:5353".parse().expect("addr");
    let two: std::net::Ipv4Addr = p.v4(2).parse().expect("ip");
    let mut zone = crate::dnsauth::Zone::standard(two, 300);
    zone.delay = Duration::from_millis(600);
    let auth = crate::run::dns_in(&p.work, up, zone);
    let pol = policy_file("escape-43", ALLOWED);
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", "127.0.0.11:5353")]);
    let forger =
        spawn_as(&p.work, Priv::Nobody, &["dns-forge", "127.0.0.11", "5353", "allowed.test", FORGED, "90"]);
    let server: SocketAddr = "127.0.0.1:53".parse().expect("addr");
    // 4 clients x 50 queries, each client one at a time.
    let results: Vec<Option<Vec<std::net::IpAddr>>> = in_netns(&p.work, move || {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..50).map(|_| ask_a(server, "allowed.test.")).collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().expect("client thread")).collect()
    });
    let forged: std::net::IpAddr = FORGED.parse().expect("ip");
    let served_forged = results.iter().flatten().filter(|a| a.contains(&forged)).count();
    let real = results.iter().flatten().filter(|a| a.contains(&std::net::IpAddr::V4(two))).count();
    // The forger's latest count (it prints one a second).
    let mut last = String::new();
    while let Some(l) = forger.line(Duration::from_millis(100)) {
        last = l;
    }
    eprintln!(
        "escape_44: {served_forged} forged, {real} real of {} queries; upstream saw udp {} tcp {}; forger: {last}",
        results.len(),
        auth.count("allowed.test", "udp"),
        auth.count("allowed.test", "tcp")
    );
    assert_eq!(
        served_forged,
        0,
        "egret served the forger's address {served_forged} times of {}",
        results.len()
    );
    assert!(real >= 190, "only {real} of {} queries got the real answer", results.len());
    assert_eq!(auth.count("allowed.test", "udp"), 0, "the loopback upstream was asked over udp");
    drop(forger);
    drop(d);
}

// ---------------------------------------------------------------------------
// Round 3: each attempt, held or not, as a test.

/// `attack.py ARGS` as `who` inside `ns`: its output (it must exit 0).
fn attack_py(ns: &str, who: Priv, args: &[&str]) -> String {
    let mut c = as_workload(ns, who);
    c.args([py3(), &util::public("netns/attack.py")]).args(args);
    let (code, out, err) = util::run(c);
    assert_eq!(code, 0, "attack.py {args:?}: {err}");
    out
}

/// The marker sniffer on the upstream's eth0, proven to see what reaches
/// it by one plain datagram to the allowed `.2`.
fn marker_sniffer(p: &Pair) -> crate::netns::Guard {
    let sniff =
        Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("sniff_marker.py"), "eth0", "egret-covert"]);
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args([py3(), "-c", &format!("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'egret-covert', ('{}', 9))", p.v4(2))]);
    util::run(c);
    assert!(sniff.line(Duration::from_secs(3)).is_some(), "the sniffer saw nothing at all");
    sniff
}

/// Policy of the upstream's .2 and ::2 as IP entries, so that every
/// technique has a control that must get through.
fn allowed_two(p: &Pair) -> String {
    format!("allowlist:\n  ips: [\"{}\", \"{}\"]\n", p.v4(2), p.v6(2))
}

#[test]
fn escape_45_other_ip_protocols_udp_lite_and_hand_made_fragments_stay_in() {
    for (mode, env) in UDP_MODES {
        let w = world();
        let p = &w.p;
        let pol = policy_file(&format!("escape-45-{mode}"), &allowed_two(p));
        let upstream = format!("{}:53", p.v4(2));
        let mut all = vec![("DNS_UPSTREAMS", upstream.as_str())];
        all.extend_from_slice(env);
        let _d = Daemon::start(&p.work, &pol, &all);
        let sniff = marker_sniffer(p);
        // GRE, IPIP, 6in4, an experimental number; UDP-Lite (no privilege
        // needed); a UDP datagram in hand-made fragments.
        let cases = |dst: &str, src: &str| -> Vec<(Priv, Vec<String>)> {
            let mut v: Vec<(Priv, Vec<String>)> = [47, 4, 41, 253]
                .iter()
                .map(|proto| (Priv::NetRaw, vec!["rawproto".into(), dst.into(), proto.to_string()]))
                .collect();
            v.push((Priv::Nobody, vec!["udplite".into(), dst.into(), "7000".into()]));
            v.push((Priv::NetRaw, vec!["frag".into(), src.into(), dst.into(), "7000".into(), "all".into()]));
            v
        };
        for (two, three, src) in [(p.v4(2), p.v4(3), p.v4(1)), (p.v6(2), p.v6(3), p.v6(1))] {
            // Control: every technique reaches the allowed host.
            for (who, args) in cases(&two, &src) {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = attack_py(&p.work, who, &refs);
                assert!(
                    sniff.line(Duration::from_secs(2)).is_some(),
                    "{mode}: control {args:?} to the allowed host never arrived ({out})"
                );
                while sniff.line(Duration::from_millis(200)).is_some() {}
            }
            let mut forbidden = cases(&three, &src);
            // SCTP and DCCP with junk headers have no control: conntrack
            // calls them invalid, so not even the allowed host gets them.
            for proto in ["132", "33"] {
                forbidden.push((Priv::NetRaw, vec!["rawproto".into(), three.clone(), proto.into()]));
            }
            for part in ["first", "later"] {
                forbidden.push((
                    Priv::NetRaw,
                    vec!["frag".into(), src.clone(), three.clone(), "7000".into(), part.into()],
                ));
            }
            for (who, args) in forbidden {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = attack_py(&p.work, who, &refs);
                assert_eq!(
                    sniff.line(Duration::from_millis(700)),
                    None,
                    "{mode}: {args:?} left the pod ({out})"
                );
            }
        }
    }
}

#[test]
fn escape_46_ipv4_mapped_ipv6_destinations_are_their_ipv4_selves() {
    // An AF_INET6 socket connecting to ::ffff:a.b.c.d sends IPv4: the
    // rules and the proxies must see the IPv4 address, not a v6 one that
    // no set holds (or, worse, a v6 one a set holds).
    let s = setup("46", ALLOWED, &[]);
    let p = s.p();
    let _echo = forbidden_echo(p, "7000", "7000");
    let mapped = |p: &Pair, n: u8| format!("::ffff:{}", p.v4(n));
    let o = http(&p.work, s.addr(&mapped(p, 3), 80), &get("allowed.test"));
    assert_403(&o, "mapped .3:80");
    let ev = s.event_where(|e| e["msg"] == "http.blocked");
    assert_eq!(ev["reason"], "ip-mismatch", "{ev}");
    let o = tls(&p.work, s.addr(&mapped(p, 3), 443), hello(Some(b"allowed.test"), 0));
    assert_tls_blocked(&o, "mapped .3:443");
    let ev = s.event_where(|e| e["msg"] == "https.blocked");
    assert_eq!(ev["reason"], "ip-mismatch", "{ev}");
    let o = tcp(&p.work, s.addr(&mapped(p, 3), 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "mapped .3:7000 {o:?}");
    o.assert_fast("mapped .3:7000");
    let r = udp(&p.work, s.addr(&mapped(p, 3), 7000), b"x");
    assert_udp_refused_fast(&r, "udp mapped .3:7000");
    // Control: the mapped form of the allowed address is served.
    let o = http(&p.work, s.addr(&mapped(p, 2), 80), &get("allowed.test"));
    assert!(o.text().contains(&format!("hello from {}", p.v4(2))), "mapped .2:80: {o:?}");
    drop(s);

    // Strict DNS mode: the mapped form of the allowed name's address is as
    // closed as the address before a lookup, and opens with it.
    let s = setup("46-strict", ALLOWED, &[("FILTER_MODE", "dns"), ("DNS_STRICT", "true")]);
    let p = s.p();
    let o = http(&p.work, s.addr(&mapped(p, 2), 80), &get("allowed.test"));
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "strict: mapped .2 before a lookup {o:?}");
    o.assert_fast("strict: mapped .2 before a lookup");
    let (out, _) = dig_in(&p.work, &p.v4(2), "allowed.test");
    assert!(out.contains("status: NOERROR"), "{out}");
    let o = http(&p.work, s.addr(&mapped(p, 2), 80), &get("allowed.test"));
    assert!(o.text().contains("hello from"), "strict: mapped .2 after the lookup: {o:?}");
    let o = http(&p.work, s.addr(&mapped(p, 3), 80), &get("allowed.test"));
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "strict: mapped .3 {o:?}");
}

#[test]
fn escape_47_tcp_fast_open_data_in_the_syn_is_filtered_like_any_other() {
    // TFO without cookies (0x5: client, and data in the first SYN): the
    // bytes ride the SYN, before any handshake a proxy could stand in.
    let w = world();
    let p = &w.p;
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", &p.work, "sysctl", "-qw", "net.ipv4.tcp_fastopen=0x205"])
        .status()
        .expect("sysctl");
    assert!(st.success(), "net.ipv4.tcp_fastopen in the workload namespace");
    let pol = policy_file("escape-47", &allowed_two(p));
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let addrs = [p.v4(2), p.v4(3), p.v6(2), p.v6(3)].join(",");
    let _echo = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), "7000", "", "", &addrs]);
    let tfo = |host: &str, port: u16| attack_py(&p.work, Priv::Nobody, &["tfo", host, &port.to_string()]);
    // Control: the allowed host's echo comes back.
    for two in [p.v4(2), p.v6(2)] {
        let v: serde_json::Value = serde_json::from_str(tfo(&two, 7000).trim()).expect("json");
        assert_eq!(v["reached"], true, "control: TFO to the allowed {two}:7000: {v}");
    }
    for (host, port) in [(p.v4(3), 7000), (p.v6(3), 7000), (p.v4(3), 80), (p.v4(3), 443), (p.v6(3), 80)] {
        let v: serde_json::Value = serde_json::from_str(tfo(&host, port).trim()).expect("json");
        assert_held(&v, &format!("TFO to {host}:{port}"));
    }
}

#[test]
fn escape_48_icmp_errors_quoting_an_allowed_flow_carry_nothing_to_a_forbidden_host() {
    // An ICMP error is RELATED to the flow it quotes; one sent to another
    // host than that flow's peer must not ride the flow's permission.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-48", &allowed_two(p));
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let sniff = marker_sniffer(p);
    for (two, three, local) in [(p.v4(2), p.v4(3), p.v4(1)), (p.v6(2), p.v6(3), p.v6(1))] {
        // An allowed flow: the workload's UDP socket to the allowed :9.
        let (two_c, local_c) = (two.clone(), local.clone());
        let sock = in_netns(&p.work, move || {
            let u = UdpSocket::bind(SocketAddr::new(local_c.parse().unwrap(), 0)).expect("bind");
            u.send_to(b"open", SocketAddr::new(two_c.parse().unwrap(), 9)).expect("send");
            u
        });
        let port = sock.local_addr().expect("addr").port().to_string();
        let error =
            |to: &str| attack_py(&p.work, Priv::NetRaw, &["icmp-error", to, &two, "9", &local, &port]);
        // Control: the error to the flow's own peer is related and leaves.
        let out = error(&two);
        assert!(
            sniff.line(Duration::from_secs(2)).is_some(),
            "control: the error to {two} never arrived ({out})"
        );
        while sniff.line(Duration::from_millis(200)).is_some() {}
        let out = error(&three);
        assert_eq!(
            sniff.line(Duration::from_millis(700)),
            None,
            "an ICMP error quoting the flow to {two} reached {three} ({out})"
        );
        drop(sock);
    }
}

#[test]
fn escape_49_h2c_prior_knowledge_and_upgrade_never_leave_http_1_1_checking() {
    // HTTP/2 over cleartext names its host in :authority, inside frames
    // the HTTP/1.1 checker cannot read: whatever the server says, the
    // proxy must not pass such bytes on.
    let w = crate::run::bare_world(|two, _| crate::dnsauth::Zone::standard(two, 300));
    let p = &w.p;
    // The allowed address's server switches to h2c for anyone who asks,
    // and for anyone who does not.
    let _srv =
        Pair::spawn_ready(&p.up, py3(), &[&util::public("netns/attack.py"), "switch-server", &p.v4(2), "80"]);
    let pol = policy_file("escape-49", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let to: SocketAddr = format!("{}:80", p.v4(2)).parse().unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // A HEADERS frame (stream 1, END_HEADERS) whose block literally names
    // blocked.test as :authority (literal header field, new name).
    let headers_frame = {
        let mut block = vec![0x00, 10];
        block.extend(b":authority");
        block.push(12);
        block.extend(b"blocked.test");
        let mut f = vec![0, 0, block.len() as u8, 0x01, 0x04, 0, 0, 0, 1];
        f.extend(block);
        f
    };
    let upgrade = "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                   Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let cases: Vec<(&str, Vec<Vec<u8>>, Duration)> = vec![
        ("prior knowledge", vec![[preface.clone(), headers_frame.clone()].concat()], Duration::ZERO),
        (
            "upgrade, then the preface after the 101",
            vec![upgrade.as_bytes().to_vec(), [preface.clone(), headers_frame.clone()].concat()],
            Duration::from_millis(300),
        ),
        (
            "upgrade with the preface in the same write",
            vec![[upgrade.as_bytes().to_vec(), preface, headers_frame].concat()],
            Duration::ZERO,
        ),
    ];
    for (what, chunks, gap) in cases {
        let o = tcp(&p.work, to, chunks, gap, CLIENT_TIMEOUT);
        let t = o.text();
        assert!(
            !t.contains("echo:PRI") && !t.contains("blocked.test"),
            "{what}: HTTP/2 bytes reached the server: {t}"
        );
        assert!(!o.timed_out(), "{what}: left open: {o:?}");
        assert!(t.contains("HTTP/1.1 403"), "{what}: not refused: {t}");
        let ev = d.wait_event("http.blocked", "reason", "parse-failed");
        assert_eq!(ev["destination_ip"], p.v4(2).as_str(), "{what}: {ev}");
    }
}

/// A DNS query for `qname` given as raw labels (any bytes), type A.
fn raw_query(labels: &[&[u8]]) -> Vec<u8> {
    let mut q = vec![0x51, 0x51, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in labels {
        q.push(l.len() as u8);
        q.extend(*l);
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

#[test]
fn escape_50_control_characters_in_names_never_forge_log_lines_or_events() {
    // A name carrying a newline and a terminal escape, in an SNI, a Host
    // header and a DNS question: each lands in events and log lines, where
    // a raw newline would forge a line of its own and an ESC would drive
    // the terminal of whoever reads the log.
    const FAKE: &str = "FAKE-LINE";
    let evil = format!("x\n{FAKE} {{\"msg\":\"http.allowed\"}}\x1b[2J.allowed.test");
    let pol = "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n";
    let s = setup("50", pol, &[]);
    let p = s.p();
    let o = tls(&p.work, s.addr(&p.v4(2), 443), hello(Some(evil.as_bytes()), 0));
    assert_tls_blocked(&o, "SNI with control characters");
    let o = http(
        &p.work,
        s.addr(&p.v4(2), 80),
        &format!("GET / HTTP/1.1\r\nHost: a\x1b[2J{FAKE}.allowed.test\r\n\r\n"),
    );
    o.assert_not_served("Host with an escape");
    let ev = s.event_where(|e| e["msg"] == "https.blocked");
    assert!(ev["https"].as_str().is_some_and(|n| n.contains(FAKE)), "the SNI is in the event, escaped: {ev}");
    std::thread::sleep(Duration::from_millis(500));
    assert_no_forged_lines(&s.d, FAKE);
    drop(s);
    // DNS mode, the upstream unreachable so the question is logged at warn.
    let w = world();
    let pf = policy_file("escape-50-dns", pol);
    let d = Daemon::start(&w.p.work, &pf, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", "127.0.0.1:5399")]);
    let line = format!("\n{FAKE} \x1b[2J");
    for labels in [
        vec![b"x".as_slice(), line.as_bytes(), b"allowed", b"test"],
        vec![line.as_bytes(), b"blocked", b"test"],
    ] {
        let q = raw_query(&labels);
        let r = udp(&w.p.work, "127.0.0.1:53".parse().unwrap(), &q);
        assert!(r.0.is_ok(), "no answer to a query with control characters: {r:?}");
    }
    let ev = d.wait_event("dns.blocked", "action", "BLOCKED");
    // Refused as an invalid name (never forwarded), escaped in the event.
    assert_eq!(ev["reason"], "invalid-name", "{ev}");
    assert!(ev["qname"].as_str().is_some_and(|n| n.contains("\\012fake-line")), "{ev}");
    std::thread::sleep(Duration::from_millis(500));
    assert_no_forged_lines(&d, FAKE);
}

/// No stdout (event) or stderr (log) line of `d` starts with `fake` or
/// holds a control character.
fn assert_no_forged_lines(d: &Daemon, fake: &str) {
    let mut all: Vec<String> = d.lines.try_iter().collect();
    assert!(!all.is_empty(), "no event lines at all");
    all.extend(d.logged());
    for l in &all {
        assert!(!l.starts_with(fake), "a forged line: {l:?}");
        assert!(!l.bytes().any(|b| b < 0x20 && b != b'\t'), "a control character in {l:?}");
    }
}

/// The dashboard key of the tests that ship to a loopback dashboard.
const DASH_KEY: &str = "round3-dashboard-key";

/// `egret dashboard` inside `ns` on 127.0.0.1:8081, as deploy/pod.yaml
/// runs it (a container of the pod, so in the pod's namespace).
fn pod_dashboard(ns: &str) -> crate::netns::Guard {
    let mut c = Pair::exec(ns, env!("CARGO_BIN_EXE_egret"));
    c.arg("dashboard").env_clear().env("API_KEY", DASH_KEY).env("PORT", "127.0.0.1:8081");
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let g = crate::netns::Guard::of(c.spawn().expect("spawn egret dashboard"));
    let up = wait_for(Duration::from_secs(10), || {
        in_netns(ns, || TcpStream::connect("127.0.0.1:8081").ok().map(|_| ()))
    });
    assert!(up.is_some(), "egret dashboard did not listen");
    g
}

/// `egret run` shipping to the pod's loopback dashboard with the key.
fn shipping_daemon(p: &Pair, tag: &str, extra: &[(&str, &str)]) -> Daemon {
    let pol = policy_file(tag, ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let mut env = vec![
        ("DNS_UPSTREAMS", upstream.as_str()),
        ("DASHBOARD_HOST", "http://127.0.0.1:8081"),
        ("DASHBOARD_API_KEY", DASH_KEY),
        ("DASHBOARD_START_DELAY", "0s"),
    ];
    env.extend_from_slice(extra);
    Daemon::start(&p.work, &pol, &env)
}

/// A co-tenant's request to allowed.test as uid 1000.
fn co_tenant_request(p: &Pair) {
    let mut c = as_workload(&p.work, Priv::User(1000));
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    c.args(["curl", "-s", "-m", "5", "--resolve", &resolve, "http://allowed.test/co-tenant-secret-path"]);
    let (_, out, _) = util::run(c);
    assert!(out.contains("hello from"), "the co-tenant's request: {out}");
}

#[test]
fn escape_51_a_workload_cannot_read_co_tenant_events_off_the_pods_dashboard() {
    // deploy/pod.yaml's layout: the dashboard is a container of the pod,
    // on 127.0.0.1:8081 in the namespace every container shares.
    let w = world();
    let p = &w.p;
    let _dash = pod_dashboard(&p.work);
    let d = shipping_daemon(p, "escape-51", &[]);
    co_tenant_request(p);
    d.wait_event("http.allowed", "uid", 1000);
    // Another workload, uid 65534 with no capabilities, asks the dashboard.
    let mut seen = String::new();
    for _ in 0..20 {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["curl", "-s", "-m", "3", "http://127.0.0.1:8081/api/v1/logs"]);
        seen = util::run(c).1;
        if seen.contains("allowed.test") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("escape_51: the workload read {} bytes of events", seen.len());
    assert!(
        !seen.contains("allowed.test") && !seen.contains("\"uid\":1000"),
        "a workload read a co-tenant's traffic off the dashboard: {}",
        &seen[..seen.len().min(400)]
    );
    // Nor off the live stream; the key holder reads both (so the events
    // were there to be read, and egret shipped to a listener of its uid).
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args(["curl", "-s", "-m", "2", "http://127.0.0.1:8081/api/v1/events?since_id=0"]);
    let stream = util::run(c).1;
    assert!(!stream.contains("allowed.test"), "a workload read the live stream: {stream}");
    let key = format!("X-Api-Key: {DASH_KEY}");
    let (_, out) = curl(&p.work, &["-H", &key, "http://127.0.0.1:8081/api/v1/logs"]);
    assert!(out.contains("co-tenant-secret-path") || out.contains("allowed.test"), "with the key: {out}");
}

#[test]
fn escape_52_a_squatter_on_the_dashboards_loopback_port_gets_no_key() {
    // The pod's containers start together: a workload (no privilege, the
    // port is above 1024) binds 127.0.0.1:8081 before the dashboard does,
    // or while it restarts. egret (uid 0 here, DASHBOARD_UID unset: its
    // own uid) looks up the listener's owner and sends nothing to uid
    // 65534; escape_51 shows the same daemon shipping to a dashboard of
    // its own uid.
    let w = world();
    let p = &w.p;
    let squatter = spawn_as(&p.work, Priv::Nobody, &["capture-http", "127.0.0.1", "8081"]);
    let d = shipping_daemon(p, "escape-52", &[("METRICS_ADDR", "127.0.0.1:9195")]);
    co_tenant_request(p);
    d.wait_event("http.allowed", "uid", 1000);
    let warned = d.wait_logged("not to DASHBOARD_UID=0", Duration::from_secs(15));
    assert!(warned.contains("uid 65534") && !warned.contains(DASH_KEY), "{warned}");
    let mut heads = Vec::new();
    while let Some(l) = squatter.line(Duration::from_secs(3)) {
        heads.push(l);
        if heads.len() >= 3 {
            break;
        }
    }
    eprintln!("escape_52: the squatter got {} requests", heads.len());
    for h in &heads {
        assert!(!h.contains(DASH_KEY), "the squatter received the dashboard key: {h}");
        assert!(!h.contains("allowed.test"), "the squatter received events: {h}");
    }
    // /metrics shows the pipeline's counters as the control loop last
    // copied them (every second): poll a few times.
    let (mut metrics, mut refused) = (String::new(), None);
    for _ in 0..20 {
        metrics = curl(&p.work, &["http://127.0.0.1:9195/metrics"]).1;
        refused = metrics
            .lines()
            .find_map(|l| l.strip_prefix("egret_filter_dashboard_foreign_listener_total "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        if refused.is_some_and(|n| n >= 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(refused.is_some_and(|n| n >= 1), "the refusal is not counted: {metrics}");
}

#[test]
fn escape_53_ipv6_options_headers_do_not_hide_the_transport_from_the_rules() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-53", &allowed_two(p));
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let addrs = [p.v6(2), p.v6(3)].join(",");
    let _echo =
        Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), "7000", "7000", &addrs, &addrs]);
    for proto in ["tcp", "udp"] {
        for which in ["hbh", "dst", "both"] {
            let go = |host: &str| -> serde_json::Value {
                let out = attack_py(&p.work, Priv::NetRaw, &["exthdr", host, "7000", proto, which]);
                serde_json::from_str(out.trim()).expect("json")
            };
            // Control (a few tries: a fresh namespace's IPv6 may still be
            // settling when several tests share the machine).
            let v =
                (0..3).map(|_| go(&p.v6(2))).find(|v| v["reached"] == true).unwrap_or_else(|| go(&p.v6(2)));
            assert_eq!(v["reached"], true, "control: {proto} with {which} to the allowed ::2: {v}");
            assert_held(&go(&p.v6(3)), &format!("{proto} with {which} options to ::3"));
        }
    }
}

#[test]
fn escape_54_egrets_environment_and_memory_are_closed_to_a_root_workload() {
    // The same pid namespace (a sidecar in egret's container, or a pod
    // with shareProcessNamespace): uid 0 with the runtime's default
    // capabilities tries egret's /proc entries and ptrace.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-54", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(
        &p.work,
        &pol,
        &[
            ("DNS_UPSTREAMS", &upstream),
            ("DASHBOARD_HOST", "http://127.0.0.1:1"),
            ("DASHBOARD_API_KEY", DASH_KEY),
        ],
    );
    let pid = d.child.id();
    // Control: the key is in egret's environment (root with every
    // capability, the test itself, reads it).
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("environ as the test");
    assert!(util::text(&env).contains(DASH_KEY), "the key is not where the attack looks");
    let probe = format!(
        r#"
import ctypes, json, os
pid = {pid}
r = {{}}
for name in ("environ", "mem", "maps", "task/{pid}/environ"):
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as f:
            r[name] = f.read(65536).decode("latin-1")
    except OSError as e:
        r[name] = "error: %s" % e
# The fd numbers may be listed (the directory is the owner's, uid 0);
# where they lead (sockets, the netlink socket) must not be readable.
links = []
try:
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            links.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
except OSError:
    pass
r["fd_links"] = links
libc = ctypes.CDLL(None, use_errno=True)
r["ptrace"] = libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
r["ptrace_errno"] = ctypes.get_errno()
if r["ptrace"] == 0:
    libc.ptrace(17, pid, 0, 0)  # PTRACE_DETACH
print(json.dumps(r))
"#
    );
    for who in [Priv::Root, Priv::Container, Priv::Nobody] {
        let mut c = as_workload(&p.work, who);
        c.args([py3(), "-c", &probe]);
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "{who:?}: {err}");
        assert!(!out.contains(DASH_KEY), "{who:?} read the dashboard key out of egret: {out}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        assert_ne!(v["ptrace"], 0, "{who:?} attached to egret with ptrace: {v}");
        for name in ["environ", "mem", "maps"] {
            assert!(
                v[name].as_str().is_some_and(|t| t.starts_with("error")),
                "{who:?} opened /proc/egret/{name}: {v}"
            );
        }
        assert_eq!(v["fd_links"], serde_json::json!([]), "{who:?} read where egret's fds lead");
    }
}

#[test]
fn escape_55_one_client_flooding_blocked_packets_does_not_hide_anothers() {
    // The blocked-packet log is rate-limited (LOG_RATE_PER_SECOND): a
    // workload that keeps the limit spent would hide every other
    // container's blocked attempts from the audit trail.
    let s = setup("55", ALLOWED, &[]);
    let p = s.p();
    let flood = {
        let (ns, to) = (p.work.clone(), p.v4(3));
        std::thread::spawn(move || attack_py(&ns, Priv::User(1000), &["log-flood", &to, "7009", "4"]))
    };
    std::thread::sleep(Duration::from_millis(1500));
    let r = udp(&p.work, s.addr(&p.v4(3), 7010), b"x");
    assert_udp_refused_fast(&r, "the other client's datagram");
    let o = http(&p.work, s.addr(&p.v4(3), 7011), "x");
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "{o:?}");
    let sent = flood.join().expect("flood");
    eprintln!("escape_55: the flood sent {}", sent.trim());
    let seen = wait_for(Duration::from_secs(5), || {
        s.d.events.try_iter().find(|e| {
            e["msg"] == "nflog.event" && (e["destination_port"] == 7010 || e["destination_port"] == 7011)
        })
    });
    assert!(seen.is_some(), "the flood of uid 1000 hid another client's blocked packets from the log");
}

#[test]
fn escape_56_one_client_flooding_dns_does_not_starve_another() {
    let mut zone_delay = None;
    let w = crate::run::world_with(|two, _| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.delay = Duration::from_millis(300);
        zone_delay = Some(z.delay);
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-56", "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", &upstream)]);
    let lost_before = dns_listener_drops(&p.work);
    let flood = spawn_as(&p.work, Priv::User(1000), &["dns-flood", "127.0.0.1", "53", "allowed.test", "8"]);
    std::thread::sleep(Duration::from_secs(2));
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    for _ in 0..4 {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", "@127.0.0.1", "allowed.test", "A", "+time=3", "+tries=1"]);
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        worst = worst.max(start.elapsed());
        answered += usize::from(out.contains("status: NOERROR"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let stats = flood.line(Duration::from_secs(10)).unwrap_or_default();
    let limited = d.events.try_iter().filter(|e| e["msg"] == "dns.blocked" && e["reason"] == "rate").count();
    let lost = dns_listener_drops(&p.work) - lost_before;
    eprintln!(
        "escape_56: flood {stats}; the other client answered {answered}/4, slowest {worst:?} (upstream delay \
         {zone_delay:?}); rate events {limited}; datagrams the kernel dropped at egret's full listener {lost}"
    );
    assert_eq!(answered, 4, "another client got no answer during the flood");
    assert!(worst < Duration::from_secs(2), "another client waited {worst:?} during the flood");
    assert!(d.child.id() > 0);
}

#[test]
fn escape_56_one_clients_backlog_does_not_queue_ahead_of_another() {
    // No rate limit (DNS_HARDENING=false): uid 1000 sends 1,500 allowed
    // queries in one burst, each held 300 ms by the upstream, more than
    // the forwarders carry at once (64). In one queue, a query asked
    // right after would wait behind all of them (1,500 / 64 x 0.3 s).
    let w = crate::run::world_with(|two, _| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.delay = Duration::from_millis(300);
        z
    });
    let p = &w.p;
    let pol =
        policy_file("escape-56-backlog", "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let env = [("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_HARDENING", "false")];
    let _d = Daemon::start(&p.work, &pol, &env);
    let burst = r#"
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
name = lambda i: b"".join(bytes([len(l)]) + l for l in [b"b%d" % i, b"allowed", b"test"]) + b"\x00"
for i in range(1500):
    s.sendto(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + name(i) + b"\x00\x01\x00\x01", ("127.0.0.1", 53))
    if i % 100 == 99:
        time.sleep(0.01)
print("sent", flush=True)
got, end = 0, time.time() + 15
s.settimeout(1)
while time.time() < end and got < 1500:
    try:
        s.recv(2048)
        got += 1
    except OSError:
        pass
print(got, flush=True)
"#;
    let mut c = as_workload(&p.work, Priv::User(1000));
    c.args([py3(), "-c", burst]).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("burst");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut out, &mut line);
    assert_eq!(line.trim(), "sent", "the burst");
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args(["dig", "@127.0.0.1", "allowed.test", "A", "+time=5", "+tries=1"]);
    let start = Instant::now();
    let (_, dig, _) = util::run(c);
    let took = start.elapsed();
    line.clear();
    let _ = std::io::BufRead::read_line(&mut out, &mut line);
    let _ = child.wait();
    eprintln!("escape_56: the burst got {} answers; the other client's lookup took {took:?}", line.trim());
    assert!(dig.contains("status: NOERROR"), "{dig}");
    assert!(took < Duration::from_secs(2), "another client waited {took:?} behind one client's backlog");
}

#[test]
fn escape_57_strangely_shaped_blocked_packets_neither_leave_nor_upset_the_log_reader() {
    // Raw packets whose headers lie (options, offsets, lengths, long
    // extension chains): each is blocked, and the NFLOG copy of it, which
    // egret parses, does not stop egret from logging the next one.
    let w = world();
    let pol = policy_file("escape-57", &allowed_two(&w.p));
    let upstream = format!("{}:53", w.p.v4(2));
    let d = Daemon::start(&w.p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let s = Setup { d, w };
    let p = s.p();
    let sniff = marker_sniffer(p);
    let kinds4 = ["v4-options", "v4-short-tcp", "v4-tcp-offset"];
    let kinds6 = ["v6-chain", "v6-bad-len", "v6-no-next"];
    for (src, dst, kinds) in [(p.v4(1), p.v4(3), &kinds4), (p.v6(1), p.v6(3), &kinds6)] {
        for kind in kinds.iter() {
            for _ in 0..3 {
                let out = attack_py(&p.work, Priv::NetRaw, &["odd-packet", &src, &dst, kind]);
                // EPERM is the reject rule's answer; any other error would
                // mean the kernel refused the shape before the rules.
                assert!(out.contains("\"sent\": true") || out.contains("[Errno 1]"), "{kind}: {out}");
            }
            assert_eq!(
                sniff.line(Duration::from_millis(500)),
                None,
                "an odd packet ({kind}) to {dst} left the pod"
            );
        }
    }
    assert!(alive(s.d.child.id()), "egret exited after the odd packets");
    // The log reader still reads: an ordinary blocked datagram is logged.
    std::thread::sleep(Duration::from_secs(3)); // the log limit's burst refills
    let r = udp(&p.work, s.addr(&p.v4(3), 7123), b"x");
    assert_udp_refused_fast(&r, "the datagram after the odd ones");
    let ev = s.d.wait_event("nflog.event", "destination_port", 7123);
    assert_eq!(ev["action"], "BLOCKED", "{ev}");
    assert!(alive(s.d.child.id()), "egret exited");
}

/// Whether process `pid` still runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn escape_58_one_clients_dns_rate_limit_is_not_another_clients() {
    // No flood: uid 1000 asks for allowed.test 200 times a second (4x
    // DNS_RATE_QPS) for 5 s, which a busy client or a slow tunnel does.
    let s = setup("58", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let steady = r#"
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
q = lambda i: struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\x07allowed\x04test\x00\x00\x01\x00\x01"
end = time.time() + 5
i = 0
while time.time() < end:
    s.sendto(q(i & 0xFFFF), ("127.0.0.1", 53))
    i += 1
    time.sleep(0.005)
    try:
        while True:
            s.recv(2048)
    except OSError:
        pass
"#;
    let mut c = as_workload(&p.work, Priv::User(1000));
    c.args([py3(), "-c", steady]);
    let sender = std::thread::spawn(move || util::run(c).0);
    std::thread::sleep(Duration::from_secs(2));
    // A co-tenant (another uid; another container in a pod) asks.
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", "@127.0.0.1", "allowed.test", "A", "+time=2", "+tries=1"]);
        let (_, out, _) = util::run(c);
        let status = out.split("status: ").nth(1).and_then(|r| r.split(',').next()).unwrap_or("none");
        answers.push(status.to_owned());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(sender.join().expect("sender"), 0, "the steady sender");
    let ev = s.event_where(|e| e["msg"] == "dns.blocked" && e["reason"] == "rate");
    eprintln!("escape_58: the co-tenant's answers {answers:?}; the limit event: {ev}");
    assert!(
        answers.iter().all(|a| a == "NOERROR"),
        "the co-tenant's lookups were refused for uid 1000's rate: {answers:?}"
    );
}

#[test]
fn escape_59_no_neighbour_lookup_for_a_forbidden_on_link_address() {
    // A covert channel with no packet of its own: the workload's kernel
    // asks the link "who has X?" (ARP, neighbour solicitation) for
    // addresses that encode the data, and a listener on the link reads
    // them. The output rules must refuse before the neighbour lookup.
    let w = world();
    let p = &w.p;
    let (t4, t6) = (p.v4(77), p.v6(77));
    let sniff = Pair::spawn_ready(
        &p.up,
        py3(),
        &[&util::data("netns/sniff_neigh.py").to_string_lossy(), "eth0", &t4, &t6],
    );
    let poke = |who: Priv| {
        let script = format!(
            "import socket\nfor fam, a in ((socket.AF_INET, '{t4}'), (socket.AF_INET6, '{t6}')):\n    \
             try:\n        socket.socket(fam, socket.SOCK_DGRAM).sendto(b'x', (a, 7000))\n    except OSError:\n        pass\n    \
             s = socket.socket(fam, socket.SOCK_STREAM)\n    s.settimeout(0.3)\n    \
             try:\n        s.connect((a, 7000))\n    except OSError:\n        pass\n"
        );
        let mut c = as_workload(&p.work, who);
        c.args([py3(), "-c", &script]);
        util::run(c);
    };
    // Control, before egret: the kernel asks for both.
    poke(Priv::Nobody);
    let mut got: Vec<String> = std::iter::from_fn(|| sniff.line(Duration::from_secs(2))).take(2).collect();
    got.sort();
    assert_eq!(got, ["got arp", "got ns"], "without egret the lookups do go out");
    let pol = policy_file("escape-59", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    for (mode, env) in UDP_MODES {
        // Forget the entries earlier lookups left (failed or incomplete).
        for fam in ["-4", "-6"] {
            let _ = std::process::Command::new("ip")
                .args(["-n", &p.work, fam, "neigh", "flush", "dev", "eth0"])
                .status();
        }
        while sniff.line(Duration::from_millis(300)).is_some() {}
        let mut all = vec![("DNS_UPSTREAMS", upstream.as_str())];
        all.extend_from_slice(env);
        let d = Daemon::start(&p.work, &pol, &all);
        for who in [Priv::Nobody, Priv::NetRaw] {
            poke(who);
            assert_eq!(
                sniff.line(Duration::from_secs(2)),
                None,
                "{mode}: {who:?}: a neighbour lookup for a forbidden address went out"
            );
        }
        drop(d);
    }
}

/// A ClientHello naming `sni` with `extra` extensions after server_name
/// (in order: a pre_shared_key must come last), one record.
fn hello_with(sni: &[u8], extra: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let be = |n: usize| (u16::try_from(n).expect("fits u16")).to_be_bytes();
    let mut ext = Vec::new();
    let mut list = vec![0u8];
    list.extend(be(sni.len()));
    list.extend(sni);
    ext.extend([0, 0]);
    ext.extend(be(list.len() + 2));
    ext.extend(be(list.len()));
    ext.extend(list);
    for (ty, data) in extra {
        ext.extend(ty.to_be_bytes());
        ext.extend(be(data.len()));
        ext.extend(data);
    }
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01, 1, 0]);
    body.extend(be(ext.len()));
    body.extend(ext);
    let n = body.len();
    let mut hs = vec![1, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    hs.extend(body);
    let mut out = vec![22, 3, 1];
    out.extend(be(hs.len()));
    out.extend(hs);
    out
}

#[test]
fn escape_60_ech_esni_early_data_and_resumption_hellos_to_a_foreign_ip_are_refused() {
    // The allowed name as the (outer) SNI, the real destination a foreign
    // address: whatever the hello carries for the server's eyes only, the
    // decision stays on the name and the destination.
    let s = setup("60", ALLOWED, &[]);
    let p = s.p();
    let to = s.addr(&p.v4(3), 443);
    // psk_key_exchange_modes (psk_dhe_ke), then a pre_shared_key with one
    // identity and one binder (both junk: only the server could check).
    let psk = {
        let mut d = vec![0, 7, 0, 3, 1, 2, 3, 0, 0, 0, 1];
        d.extend([0, 33, 32]);
        d.extend([9u8; 32]);
        d
    };
    let zero_rtt = [23u8, 3, 3, 0, 5, b'e', b'a', b'r', b'l', b'y'];
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "ECH (outer SNI allowed)",
            hello_with(b"allowed.test", &[(0xfe0d, vec![0, 0, 1, 0, 1, 7, 0, 0, 0, 4, 1, 2, 3, 4])]),
            true,
        ),
        (
            "legacy ESNI",
            hello_with(b"allowed.test", &[(0xffce, vec![0x13, 0x01, 0, 0x1d, 0, 0, 0, 0])]),
            false,
        ),
        (
            "early data and a resumption PSK, 0-RTT data in the same write",
            [hello_with(b"allowed.test", &[(45, vec![1, 1]), (42, vec![]), (41, psk)]), zero_rtt.to_vec()]
                .concat(),
            false,
        ),
        ("TLS 1.2 renegotiation_info", hello_with(b"allowed.test", &[(0xff01, vec![0])]), false),
    ];
    for (what, bytes, ech) in cases {
        let o = tls(&p.work, to, bytes);
        assert_tls_blocked(&o, what);
        let ev = s.next("https.blocked");
        assert_eq!(ev["reason"], "ip-mismatch", "{what}: {ev}");
        assert_eq!(ev["https"], "allowed.test", "{what}: {ev}");
        if ech {
            assert_eq!(ev["ech"], true, "{what}: {ev}");
        }
    }
}

#[test]
fn escape_61_dns_labels_that_read_as_an_allowed_suffix_are_not_forwarded() {
    // Wire labels are bytes: one label "evil.allowed" under "test" prints
    // as "evil\.allowed.test", which a string suffix match would take for
    // a name under *.allowed.test; so would labels carrying NUL or a
    // backslash. None of them may reach the upstream.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-61", "allowlist:\n  domains: [\"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", &upstream)]);
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("a dotted label", vec![b"evil.allowed", b"test"]),
        ("a dotted label under the apex", vec![b"x", b"evil.allowed", b"test"]),
        ("a NUL inside a label", vec![b"evil\0", b"allowed", b"test", b"evil"]),
        ("a backslash-escaped dot", vec![b"evil\\.allowed", b"test"]),
        ("the apex's labels as one", vec![b"allowed.test"]),
    ];
    for (what, labels) in &cases {
        let q = raw_query(labels);
        let (r, _) = udp(&p.work, "127.0.0.1:53".parse().unwrap(), &q);
        let a = r.unwrap_or_else(|e| panic!("{what}: no answer: {e:?}"));
        assert!(a.len() >= 4, "{what}: {a:?}");
        let rcode = a[3] & 0x0f;
        assert!(
            rcode == 3 || rcode == 5 || rcode == 1,
            "{what}: answered rcode {rcode}, not NXDOMAIN/REFUSED/FORMERR"
        );
    }
    // Control: a real name under the wildcard is forwarded.
    let (out, _) = dig_in(&p.work, "127.0.0.1", "www.allowed.test");
    assert!(out.contains("status: NXDOMAIN") || out.contains("status: NOERROR"), "{out}");
    let seen = w.dns.seen.lock().expect("lock").clone();
    assert!(
        seen.keys().any(|(n, _)| n.contains("www.allowed.test")),
        "the control never reached the upstream: {seen:?}"
    );
    for (n, _) in seen.keys() {
        assert!(!n.contains("evil") && n != "allowed.test", "forwarded upstream: {n:?} (all: {seen:?})");
    }
    drop(d);
}

#[test]
fn escape_62_every_query_pipelined_on_one_dns_tcp_connection_is_checked() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-62", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", &upstream)]);
    let framed = |labels: &[&[u8]], id: u16| {
        let mut q = raw_query(labels);
        q[..2].copy_from_slice(&id.to_be_bytes());
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend(q);
        f
    };
    // allowed, blocked, allowed: one write, then the answers in order.
    let batch = [
        framed(&[b"allowed", b"test"], 1),
        framed(&[b"blocked", b"test"], 2),
        framed(&[b"allowed", b"test"], 3),
    ]
    .concat();
    let answers = in_netns(&p.work, move || {
        let mut s =
            TcpStream::connect_timeout(&"127.0.0.1:53".parse().unwrap(), CLIENT_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        s.write_all(&batch).unwrap();
        let mut out = Vec::new();
        for _ in 0..3 {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                break;
            }
            let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut m).is_err() {
                break;
            }
            out.push((u16::from_be_bytes([m[0], m[1]]), m[3] & 0x0f));
        }
        out
    });
    let mut by_id = answers.clone();
    by_id.sort();
    assert_eq!(by_id, [(1, 0), (2, 3), (3, 0)], "(id, rcode) of the pipelined answers: {answers:?}");
    assert_eq!(w.dns.total("blocked.test"), 0, "the blocked question went upstream");
}

#[test]
fn escape_63_framing_headers_with_unicode_spaces_cannot_smuggle_a_request() {
    // "Content-Length: <NBSP>40": a proxy that trims Unicode whitespace
    // reads 40, a server that only takes digits reads no body and parses
    // the 40 "body" bytes as a request of their own, for a Host the proxy
    // never checked.
    let w = crate::run::bare_world(|two, _| crate::dnsauth::Zone::standard(two, 300));
    let p = &w.p;
    let _srv = Pair::spawn_ready(
        &p.up,
        py3(),
        &[&util::public("netns/attack.py"), "framing-server", &p.v4(2), "80"],
    );
    let pol = policy_file("escape-63", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let to: SocketAddr = format!("{}:80", p.v4(2)).parse().unwrap();
    let hidden = b"GET /x HTTP/1.1\r\nHost: blocked.test\r\n\r\n".to_vec();
    let n = hidden.len();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for space in ["\u{a0}", "\u{2003}", "\u{3000}", "\u{85}"] {
        let mut req = format!("GET / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: {space}{n}\r\n\r\n")
            .into_bytes();
        req.extend(&hidden);
        cases.push((format!("Content-Length with U+{:04X}", space.chars().next().unwrap() as u32), req));
        let mut req =
            format!("GET / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: {space}chunked\r\n\r\n")
                .into_bytes();
        req.extend(format!("{n:x}\r\n").as_bytes());
        req.extend(&hidden);
        req.extend(b"\r\n0\r\n\r\n");
        cases.push((format!("Transfer-Encoding with U+{:04X}", space.chars().next().unwrap() as u32), req));
    }
    // Control: a plainly framed body is a body for both.
    let mut plain =
        format!("GET / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    plain.extend(&hidden);
    plain.extend(get("allowed.test").as_bytes());
    let o = tcp(&p.work, to, vec![plain], Duration::ZERO, CLIENT_TIMEOUT);
    assert_eq!(o.text().matches("hello for allowed.test").count(), 2, "control: {o:?}");
    for (what, req) in cases {
        let o = tcp(&p.work, to, vec![req], Duration::ZERO, Duration::from_secs(2));
        let t = o.text();
        assert!(!t.contains("hello for blocked.test"), "{what}: a smuggled request reached the server: {t}");
    }
    drop(d);
}

#[test]
fn escape_64_bare_lf_line_ends_cannot_show_the_server_another_host() {
    // httparse takes a lone LF for a line end (RFC 9112 §2.2 lets a
    // recipient do so); a server that ends lines at CRLF only reads the
    // whole LF-separated head as one line, and the CRLF lines after it
    // (here hidden in the body) as the request's own fields.
    let w = crate::run::bare_world(|two, _| crate::dnsauth::Zone::standard(two, 300));
    let p = &w.p;
    let _srv = Pair::spawn_ready(
        &p.up,
        py3(),
        &[&util::public("netns/attack.py"), "framing-server", &p.v4(2), "80"],
    );
    let pol = policy_file("escape-64", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let to: SocketAddr = format!("{}:80", p.v4(2)).parse().unwrap();
    let hidden = "GET /x HTTP/1.1\r\nHost: blocked.test\r\n\r\n";
    let cases = [
        format!("GET / HTTP/1.1\nHost: allowed.test\nContent-Length: {}\n\n{hidden}", hidden.len()),
        format!("GET / HTTP/1.1\r\nHost: allowed.test\nContent-Length: {}\r\n\r\n{hidden}", hidden.len()),
        format!("GET / HTTP/1.1\nHost: allowed.test\n\n{hidden}"),
    ];
    for req in cases {
        let o = tcp(&p.work, to, vec![req.clone().into_bytes()], Duration::ZERO, Duration::from_secs(2));
        let t = o.text();
        assert!(!t.contains("hello for blocked.test"), "{req:?}: the server answered for blocked.test: {t}");
    }
    drop(d);
}

#[test]
fn escape_65_no_mark_tag_or_key_in_metrics_health_refusals_or_events() {
    // What a workload can read without privilege: /metrics and /health
    // on METRICS_ADDR, egret's 403 bodies, and the events (which the pod's
    // dashboard hands to anyone, escape_51). None may carry egret's bypass
    // mark, listen mark, egress tag or dashboard key.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-65", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(
        &p.work,
        &pol,
        &[
            ("DNS_UPSTREAMS", &upstream),
            ("METRICS_ADDR", "9198"),
            ("DASHBOARD_HOST", "http://127.0.0.1:1"),
            ("DASHBOARD_API_KEY", DASH_KEY),
        ],
    );
    let mut c = Pair::exec(&p.work, "nft");
    c.args(["list", "table", "inet", "egret"]);
    let (_, table, _) = util::run(c);
    let after = |marker: &str| {
        table
            .lines()
            .filter_map(|l| {
                l.split_once(marker).map(|(_, r)| r.split_whitespace().next().unwrap_or_default().to_owned())
            })
            .find(|v| v.starts_with("0x") && v != "0x00000000")
            .unwrap_or_else(|| panic!("no {marker:?} in\n{table}"))
    };
    let (bypass, listen, tag) = (after("meta mark "), after("socket mark != "), after("meta mark set "));
    let mut secrets = vec![DASH_KEY.to_owned()];
    for hex in [&bypass, &listen, &tag] {
        let n = u32::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex mark");
        secrets.extend([format!("{n:x}"), format!("{n:#x}"), n.to_string()]);
    }
    // Refusals of every kind the proxies and the rules give.
    let mut texts = vec![
        http(&p.work, s_addr(&p.v4(3), 80), &get("allowed.test")).text(),
        http(&p.work, s_addr(&p.v4(2), 80), &get("blocked.test")).text(),
        http(&p.work, s_addr(&p.v4(2), 80), "GET / HTTP/1.1\r\n\r\n").text(),
        http(&p.work, s_addr(&p.v4(2), 80), "BREW / HTCPCP/1.0\r\n\r\n").text(),
    ];
    let _ = udp(&p.work, s_addr(&p.v4(3), 7000), b"x");
    for path in ["/metrics", "/health", "/", "/debug", "/metrics?x=1"] {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["curl", "-s", "-m", "3", &format!("http://127.0.0.1:9198{path}")]);
        texts.push(util::run(c).1);
    }
    assert!(texts.iter().any(|t| t.contains("egret_")), "no metrics were read at all: {texts:?}");
    std::thread::sleep(Duration::from_secs(1));
    texts.extend(d.lines.try_iter());
    for t in &texts {
        for s in &secrets {
            // Decimal forms of short marks could appear by chance in a
            // counter; only those of 6 digits or more are telling.
            if s.chars().all(|c| c.is_ascii_digit()) && s.len() < 6 {
                continue;
            }
            assert!(!t.contains(s.as_str()), "{s} readable by a workload in: {t}");
        }
    }
}

#[test]
fn escape_66_sni_names_do_not_carry_a_dns_tunnel_past_the_hardening() {
    // DNS_IN_HTTPS_MODE closes the direct path to the resolvers and the
    // hardening limits what allowed names carry. But the proxy checks an
    // SNI (or Host) by looking the name up: a hello naming
    // "<data>.allowed.test" at any address makes egret ask the upstream
    // for it, as a tunnel's query would.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-66", "allowlist:\n  domains: [\"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("DNS_IN_HTTPS_MODE", "true")]);
    // Control: the same names asked of egret's DNS server are refused
    // by the hardening (a 63-byte label is over DNS_MAX_LABEL_LEN).
    let label = |i: usize| format!("{i:03}{}", "d".repeat(60));
    let (out, _) = dig_in(&p.work, "127.0.0.1", &format!("{}.allowed.test", label(999)));
    assert!(out.contains("status: REFUSED"), "control: the hardening refuses a 63-byte label: {out}");
    let asked_before = w.dns.seen.lock().expect("lock").len();
    // 400 hellos, each a new 63-byte label (more than DNS_ZONE_BUDGET's
    // 300 names per minute), at a foreign address, by an unprivileged user.
    let to = s_addr(&p.v4(3), 443);
    let n = 400;
    let ns = p.work.clone();
    in_netns(&ns, move || {
        for i in 0..n {
            let name = format!("{}.allowed.test", label(i));
            if let Ok(mut c) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                let _ = c.write_all(&hello(Some(name.as_bytes()), 0));
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = c.read(&mut [0u8; 16]);
            }
        }
    });
    // The same through the HTTP proxy's Host check.
    let to80 = s_addr(&p.v4(3), 80);
    for i in n..n + 50 {
        let o = http(&p.work, to80, &get(&format!("{}.allowed.test", label(i))));
        assert!(o.text().starts_with("HTTP/1.1 403"), "{o:?}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let seen = w.dns.seen.lock().expect("lock").clone();
    let carried = seen
        .keys()
        .filter(|(name, _)| name.len() > 63 && name.starts_with(|c: char| c.is_ascii_digit()))
        .count();
    eprintln!(
        "escape_66: {carried} of {} tunnel names (SNI and Host) reached the upstream ({asked_before} names before)",
        n + 50
    );
    // Each was refused for what it is, as the DNS server's refusal says.
    let evs: Vec<serde_json::Value> = d.events.try_iter().collect();
    let hardened =
        |msg: &str| evs.iter().filter(|e| e["msg"] == msg && e["reason"] == "hardening").collect::<Vec<_>>();
    let (tls, web) = (hardened("https.blocked"), hardened("http.blocked"));
    eprintln!("escape_66: refused for the hardening: {} hellos, {} requests", tls.len(), web.len());
    drop(d);
    assert_eq!(carried, 0, "the proxy's lookups carried {carried} tunnel-shaped names to the upstream");
    assert!(!tls.is_empty() && !web.is_empty(), "no hello or request was refused for the hardening");
    let note = tls[0]["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("label-length: "), "{}", tls[0]);
}

#[test]
fn escape_66_sni_names_spend_the_dns_servers_zone_budget() {
    // Names short enough for every length limit: the check's lookups
    // spend the client's per-zone budget of distinct names, the same
    // budget its queries to egret's DNS server spend.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-66-budget", "allowlist:\n  domains: [\"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let env = [("DNS_UPSTREAMS", upstream.as_str()), ("DNS_IN_HTTPS_MODE", "true"), ("DNS_ZONE_BUDGET", "5")];
    let d = Daemon::start(&p.work, &pol, &env);
    let to = s_addr(&p.v4(3), 443);
    in_netns(&p.work, move || {
        for i in 0..8 {
            let name = format!("n{i}.allowed.test");
            if let Ok(mut c) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                let _ = c.write_all(&hello(Some(name.as_bytes()), 0));
                let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = c.read(&mut [0u8; 16]);
            }
        }
    });
    // The same client (root, in this test's cgroup) asks the DNS server
    // for a ninth name: its budget is spent.
    let (out, _) = dig_in(&p.work, "127.0.0.1", "n9.allowed.test");
    std::thread::sleep(Duration::from_millis(500));
    let seen = w.dns.seen.lock().expect("lock").clone();
    let mut asked: Vec<&String> = seen.keys().map(|(n, _)| n).filter(|n| n.starts_with('n')).collect();
    asked.sort();
    asked.dedup();
    let evs: Vec<serde_json::Value> = d.events.try_iter().collect();
    let budget = evs
        .iter()
        .filter(|e| e["msg"] == "https.blocked" && e["reason"] == "hardening")
        .filter(|e| e["note"].as_str().is_some_and(|n| n.starts_with("budget: ")))
        .count();
    eprintln!("escape_66: the upstream was asked for {asked:?}; {budget} hellos refused for the budget");
    drop(d);
    assert_eq!(asked.len(), 5, "DNS_ZONE_BUDGET=5 names reached the upstream: {asked:?}");
    assert_eq!(budget, 3, "the 6th to 8th hellos are refused for the budget");
    assert!(out.contains("status: REFUSED"), "the DNS server shares the spent budget: {out}");
}

#[test]
fn escape_67_an_ipv4_mapped_aaaa_answer_opens_no_ipv4_address_in_strict_mode() {
    // An allowed name whose AAAA is ::ffff:<forbidden v4>: learned into
    // learned6, while a socket connecting to that AAAA sends IPv4 to the
    // forbidden address, which no learned set holds.
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        let mapped = three.to_ipv6_mapped();
        z.records.push((
            "mapped.allowed.test".into(),
            300,
            hickory_proto::rr::RData::AAAA(hickory_proto::rr::rdata::AAAA(mapped)),
        ));
        z
    });
    let p = &w.p;
    let pol =
        policy_file("escape-67", "allowlist:\n  domains: [\"allowed.test\", \"mapped.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(
        &p.work,
        &pol,
        &[("FILTER_MODE", "dns"), ("DNS_STRICT", "true"), ("DNS_UPSTREAMS", &upstream)],
    );
    let mut c = Pair::exec(&p.work, "dig");
    c.args(["@127.0.0.1", "mapped.allowed.test", "AAAA", "+time=3", "+tries=1"]);
    let (_, out, _) = util::run(c);
    eprintln!("escape_67: the AAAA lookup: {}", out.lines().find(|l| l.contains("status:")).unwrap_or(""));
    for to in [s_addr(&format!("::ffff:{}", p.v4(3)), 80), s_addr(&p.v4(3), 80)] {
        let o = http(&p.work, to, &get("mapped.allowed.test"));
        assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "{to} after the mapped AAAA: {o:?}");
        o.assert_fast(&format!("{to}"));
    }
}

#[test]
fn escape_68_idle_connections_to_the_pods_dashboard_do_not_stop_egrets_events() {
    // A workload holding a thousand idle connections to the pod's
    // loopback dashboard (no privilege): egret's own POSTs must still be
    // taken, or every co-tenant's events would be lost.
    let w = world();
    let p = &w.p;
    let _dash = pod_dashboard(&p.work);
    let hog = spawn_as(&p.work, Priv::Nobody, &["hold-tcp", "127.0.0.1", "8081", "1000"]);
    let open = hog.line(Duration::from_secs(60)).unwrap_or_default();
    eprintln!("escape_68: the workload holds {open}");
    let d = shipping_daemon(p, "escape-68", &[]);
    co_tenant_request(p);
    d.wait_event("http.allowed", "uid", 1000);
    let stored = wait_for(Duration::from_secs(20), || {
        let (_, body) =
            curl(&p.work, &["-H", &format!("X-Api-Key: {DASH_KEY}"), "http://127.0.0.1:8081/api/v1/logs"]);
        body.contains("co-tenant-secret-path")
            .then_some(())
            .or_else(|| body.contains("\"uid\":1000").then_some(()))
    });
    assert!(
        stored.is_some(),
        "egret's events never reached the dashboard while a workload held its connections"
    );
    drop(hog);
}

#[test]
fn escape_69_one_client_cannot_spend_egrets_file_descriptors() {
    // MAX_CONNECTIONS (10,000) and a client's three-quarter share are
    // counted in connections, but each costs egret file descriptors: under
    // a hard RLIMIT_NOFILE of 1024 (common for a container) one client's
    // idle connections run egret out of descriptors long before its share
    // binds, and then nobody gets in.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-69", ALLOWED);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start_with_nofile(
        &p.work,
        &pol,
        &[("DNS_UPSTREAMS", &upstream), ("HEADER_TIMEOUT", "30s")],
        1024,
    );
    let hog = spawn_as(&p.work, Priv::User(1000), &["hold-tcp", &p.v4(2), "80", "1100"]);
    let open = hog.line(Duration::from_secs(60)).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2));
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", "--resolve", &resolve, "http://allowed.test/"]);
    let (_, out, _) = util::run(c);
    eprintln!("escape_69: the greedy client holds {open}; the other client got {:?}", out.lines().last());
    assert!(alive(d.child.id()), "egret died");
    assert!(out.ends_with("200"), "another client was locked out once egret's descriptors ran out: {out}");
    let ev = wait_for(Duration::from_secs(10), || {
        d.events.try_iter().find(|e| e["msg"] == "http.blocked" && e["reason"] == "limit")
    })
    .expect("a limit event");
    assert_eq!(ev["uid"], 1000, "the greedy client was the one cut: {ev}");
    drop(hog);
}

/// Round 4: the blocked-packet log's per-owner set, and the names
/// `*`-patterns and `/regex/` entries cover.
///
/// Whether uid 1000's blocked UDP datagrams to `.3:port` (0.3 s of them)
/// show in the log within 5 s.
fn co_tenant_logged(s: &Setup, port: u16) -> bool {
    let p = s.p();
    let out = attack_py(&p.work, Priv::User(1000), &["log-flood", &p.v4(3), &port.to_string(), "0.3"]);
    eprintln!("co-tenant uid 1000 sent {}", out.trim());
    wait_for(Duration::from_secs(5), || {
        s.d.events.try_iter().find(|e| e["msg"] == "nflog.event" && e["destination_port"] == port)
    })
    .is_some()
}

fn log_owner_count(ns: &str) -> usize {
    let mut c = Pair::exec(ns, "nft");
    c.args(["list", "set", "inet", "egret", "log_owners"]);
    let (_, out, _) = util::run(c);
    out.matches(" expires ").count()
}

#[test]
fn escape_70_filling_the_log_owner_set_does_not_hide_a_new_owners_blocked_packets() {
    // A root workload with the runtime's default CAP_SETUID owns one
    // socket under each of 4,096 uids and sends one blocked datagram from
    // each: the per-owner set (4,096 elements, 60 s) is full, and an
    // owner not yet in it must still be logged.
    let s = setup("70", ALLOWED, &[]);
    let p = s.p();
    let out = attack_py(&p.work, Priv::Container, &["owner-fill", &p.v4(3), "7020", "200000", "4096"]);
    eprintln!("escape_70: the filler sent {}", out.trim());
    eprintln!("escape_70: log_owners holds {} uids", log_owner_count(&p.work));
    // Let the 200/s total refill its burst, so only the set is in the way.
    std::thread::sleep(Duration::from_secs(3));
    while s.d.events.try_recv().is_ok() {}
    assert!(co_tenant_logged(&s, 7021), "a full log_owners set hid uid 1000's blocked packets from the log");
}

#[test]
fn escape_71_a_flood_from_many_uids_does_not_hide_another_owners_blocked_packets() {
    // Sixteen sockets, each under its own uid (CAP_SETUID, a runtime
    // default), each kept over its own 20/s: together past the 200/s all
    // owners share.
    let s = setup("71", ALLOWED, &[]);
    let p = s.p();
    let flood = {
        let (ns, to) = (p.work.clone(), p.v4(3));
        std::thread::spawn(move || {
            attack_py(&ns, Priv::Container, &["owners-flood", &to, "7022", "300000", "16", "5"])
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    // One datagram, as an ordinary co-tenant's refused attempt is.
    let r = udp(&p.work, s.addr(&p.v4(3), 7023), b"x");
    assert_udp_refused_fast(&r, "the co-tenant's datagram");
    let logged = wait_for(Duration::from_secs(5), || {
        s.d.events.try_iter().find(|e| e["msg"] == "nflog.event" && e["destination_port"] == 7023)
    })
    .is_some();
    let sent = flood.join().expect("flood");
    eprintln!("escape_71: the flood sent {}", sent.trim());
    assert!(logged, "a flood from 16 uids hid uid 1000's blocked packets from the log");
}

/// A glob and a regex entry, and names each must not cover: the star's
/// one-or-more, the regex's anchors, case, trailing dots, ports, `_`,
/// percent-encoding and punycode.
const PATTERNS: &str = "allowlist:\n  domains: [\"al*ed.test\", \"/x[0-9]+\\\\.allowed\\\\.test/\"]\n";
const NOT_COVERED: [&str; 14] = [
    "blocked.test",
    "BLOCKED.TEST.",
    "aled.test",
    "al.test",
    "xx1.allowed.test",
    "x.allowed.test",
    "x1.allowed.test.blocked.test",
    "blocked.test.x1.allowed.test",
    "x1.allowed_test",
    "x1-allowed.test",
    "x1.allowedatest",
    "al%2aed.test",
    "xn--al-ed-test",
    "x\u{0661}.allowed.test", // an Arabic-Indic digit one
];

#[test]
fn escape_72_glob_and_regex_entries_cover_only_their_names_in_host_sni_and_dns() {
    let s = setup("72", PATTERNS, &[]);
    let p = s.p();
    let to80 = s.addr(&p.v4(2), 80);
    let to443 = s.addr(&p.v4(2), 443);
    // The glob does allow allowed.test, however spelled, with a port.
    for host in ["allowed.test", "ALLOWED.test.", "Allowed.Test:80"] {
        let o = http(&p.work, to80, &get(host));
        assert!(o.text().contains("hello from"), "{host:?} is allowed: {o:?}");
        s.d.wait_event("http.allowed", "http_host", "allowed.test");
    }
    for name in NOT_COVERED {
        for host in [name.to_owned(), format!("{name}:80"), format!("{name}.:80")] {
            let o = http(&p.work, to80, &get(&host));
            assert_403(&o, &host);
            let ev = s.next("http.blocked");
            assert!(
                matches!(ev["reason"].as_str(), Some("not-allowlisted" | "invalid-name")),
                "Host {host:?}: {ev}"
            );
        }
        let o = tls(&p.work, to443, hello(Some(name.as_bytes()), 0));
        assert_tls_blocked(&o, &format!("SNI {name:?}"));
        let ev = s.next("https.blocked");
        assert!(
            matches!(ev["reason"].as_str(), Some("not-allowlisted" | "invalid-name")),
            "SNI {name:?}: {ev}"
        );
    }
    // An allowed SNI does not carry a forbidden Host through: the TLS
    // proxy is blind to the Host, so the HTTP proxy must check its own.
    let o = http(
        &p.work,
        to80,
        "GET http://blocked.test/ HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    );
    assert_403(&o, "absolute-form blocked.test with Host allowed.test");
    drop(s);

    let s = setup("72-dns", PATTERNS, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let (out, _) = dig_in(&p.work, &p.v4(3), "ALLOWED.test.");
    assert!(out.contains(&p.v4(2)), "the glob allows allowed.test in DNS: {out}");
    for name in NOT_COVERED {
        if !name.is_ascii() || name.contains('%') {
            continue; // dig refuses or escapes these itself
        }
        let (out, took) = dig_in(&p.work, &p.v4(3), name);
        assert!(!out.contains(&p.v4(2)), "{name} answered: {out}");
        assert!(out.contains("status: NXDOMAIN") || out.contains("status: REFUSED"), "{name}: {out}");
        assert!(took < FAST * 2, "{name}: {took:?}");
        let want = name.to_ascii_lowercase();
        let want = want.trim_end_matches('.');
        let ev = s.event_where(|e| e["msg"] == "dns.blocked" && e["qname"] == want);
        assert!(matches!(ev["reason"].as_str(), Some("not-allowlisted" | "invalid-name")), "{name}: {ev}");
    }
}

#[test]
fn escape_73_pathological_names_against_many_star_and_regex_entries_are_answered_fast() {
    // 2,000 `*` entries with many stars and 200 regexes: a 253-character
    // name built to almost match every fragment must still be refused in
    // well under a second, and a run of such names must not stall egret.
    let mut domains: Vec<String> =
        (0..2000).map(|i| format!("\"a*a*a*a*a*a*a*a-{i}.allowed.test\"")).collect();
    domains.extend((0..200).map(|i| format!("\"/(a|aa|a-)+{i}(\\\\.a+)*\\\\.allowed\\\\.test/\"")));
    let yaml = format!("allowlist:\n  domains: [{}]\n", domains.join(", "));
    let s = setup("73", &yaml, &[]);
    let p = s.p();
    let to80 = s.addr(&p.v4(2), 80);
    let label = |c: char| std::iter::repeat(c).take(61).collect::<String>();
    let names = [
        format!("{}.{}.{}.{}b", label('a'), label('a'), label('a'), "a".repeat(58)),
        format!("{}a.{}.{}.allowed.tesu", "a-".repeat(30), label('a'), label('a')),
        format!("{}.{}.{}.aaaaaaaaaa-9999.allowed.test", label('a'), label('a'), "a".repeat(40)),
    ];
    let start = Instant::now();
    for round in 0..20 {
        for n in &names {
            let o = http(&p.work, to80, &get(n));
            assert_403(&o, &format!("round {round}: {} chars", n.len()));
        }
    }
    let took = start.elapsed();
    eprintln!("escape_73: 60 pathological names refused in {took:?}");
    assert!(took < Duration::from_secs(10), "60 refusals took {took:?}");
    let o = http(&p.work, to80, &get("blocked.test"));
    assert_403(&o, "blocked.test after");
}

/// Round 5: descriptors, the resolver's fairness, the check lookups'
/// budget, the pod's dashboard, relay mode.
///
/// One plain request from `nobody` to allowed.test at .2: curl's last
/// line (the status code, `000` when it got nothing) and how long it took.
fn co_tenant_get(p: &Pair) -> (String, Duration) {
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "--resolve", &resolve]);
    c.arg("http://allowed.test/");
    let start = Instant::now();
    let (_, out, _) = util::run(c);
    (out.trim().to_owned(), start.elapsed())
}

#[test]
fn escape_74_check_lookups_in_flight_do_not_run_egret_out_of_descriptors() {
    // A proxied connection holds one descriptor ticket while its head is
    // checked, but the check's upstream lookup opens a socket of its own
    // (no ticket). With a slow upstream (0.9 s an answer, A then AAAA),
    // one client keeping its share of connections each naming a fresh
    // `h<i>.allowed.test` holds two descriptors per ticket: past
    // RLIMIT_NOFILE, accept fails for everyone.
    let w = crate::run::world_with(|two, _| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.delay = Duration::from_millis(900);
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-74", "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start_with_nofile(
        &p.work,
        &pol,
        &[("DNS_UPSTREAMS", &upstream), ("HEADER_TIMEOUT", "30s")],
        1024,
    );
    // The co-tenant's name is cached before the flood (TTL 300 s).
    let (code, took) = co_tenant_get(p);
    assert_eq!(code, "200", "control before the flood ({took:?})");
    let hog = spawn_as(&p.work, Priv::User(1000), &["head-flood", &p.v4(2), "80", "1000", "12"]);
    std::thread::sleep(Duration::from_secs(3));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(co_tenant_get(p));
        std::thread::sleep(Duration::from_millis(500));
    }
    let flood = hog.line(Duration::from_secs(30)).unwrap_or_default();
    drop(hog);
    let emfile = d.history_text().matches("open files").count();
    eprintln!("escape_74: the flood {flood}; the co-tenant got {got:?}; {emfile} log lines name EMFILE");
    assert!(alive(d.child.id()), "egret died");
    for (code, took) in &got {
        assert_eq!(code, "200", "the co-tenant was locked out while check lookups held descriptors: {got:?}");
        assert!(*took < Duration::from_secs(2), "the co-tenant waited {took:?}: {got:?}");
    }
    assert_eq!(emfile, 0, "egret ran out of descriptors (accept's EMFILE backoff) under one client's heads");
}

/// Four lookups of allowed.test by `nobody` at egret's resolver, half a
/// second apart: how many were NOERROR, and the slowest.
fn co_tenant_digs(p: &Pair) -> (usize, Duration) {
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    for _ in 0..4 {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", "@127.0.0.1", "allowed.test", "A", "+time=3", "+tries=1"]);
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        worst = worst.max(start.elapsed());
        match out.contains("status: NOERROR") {
            true => answered += 1,
            false => eprintln!("co-tenant lookup not answered after {:?}: {out}", start.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    (answered, worst)
}

#[test]
fn escape_75_a_dns_flood_from_many_source_ports_does_not_starve_another_client() {
    // escape_56's flood from a fresh socket per query, closed at once
    // (its owner gone before egret can look it up: a sock_diag round trip
    // for every datagram, none cached), then spread over 3,000 sockets
    // round-robin (each source port's owner looked up once a second). The
    // per-datagram owner lookup is the expensive path.
    let w = crate::run::world_with(|two, _| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.delay = Duration::from_millis(300);
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-75", "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", &upstream)]);
    for count in ["0", "3000"] {
        let flood = spawn_as(
            &p.work,
            Priv::User(1000),
            &["dns-flood", "127.0.0.1", "53", "allowed.test", "7", count],
        );
        std::thread::sleep(Duration::from_secs(2));
        let lost_before = dns_listener_drops(&p.work);
        let (answered, worst) = co_tenant_digs(p);
        let stats = flood.line(Duration::from_secs(15)).unwrap_or_default();
        drop(flood);
        let lost = dns_listener_drops(&p.work) - lost_before;
        eprintln!(
            "escape_75: {count} sockets: flood {stats}; the other client answered {answered}/4, slowest {worst:?}; \
             datagrams the kernel dropped at egret's full listener {lost}"
        );
        assert_eq!(answered, 4, "{count} sockets: another client got no answer during the flood");
        assert!(worst < Duration::from_secs(2), "{count} sockets: another client waited {worst:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(alive(d.child.id()), "egret died");
}

#[test]
fn escape_76_case_dot_and_port_variants_of_spent_names_are_not_looked_up_again() {
    // DNS_ZONE_BUDGET=5 spent by five hellos; then the same five names
    // spelled otherwise (case, trailing dot, a port, SNI vs Host) at the
    // foreign .3, and new names spelled so, must reach the upstream not
    // once more: a variant asked again would carry bits (0x20 case, the
    // order of asks) past the budget.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-76", "allowlist:\n  domains: [\"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let env = [("DNS_UPSTREAMS", upstream.as_str()), ("DNS_IN_HTTPS_MODE", "true"), ("DNS_ZONE_BUDGET", "5")];
    let d = Daemon::start(&p.work, &pol, &env);
    let (to443, to80) = (s_addr(&p.v4(3), 443), s_addr(&p.v4(3), 80));
    let hello_to = |name: String| {
        in_netns(&p.work, move || {
            if let Ok(mut c) = TcpStream::connect_timeout(&to443, Duration::from_secs(2)) {
                let _ = c.write_all(&hello(Some(name.as_bytes()), 0));
                let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = c.read(&mut [0u8; 16]);
            }
        })
    };
    for i in 0..5 {
        hello_to(format!("v{i}.allowed.test"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let asked = |w: &World| -> Vec<((String, &'static str), usize)> {
        let mut v: Vec<_> = w
            .dns
            .seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|((n, _), _)| n.starts_with('v'))
            .map(|(k, c)| (k.clone(), *c))
            .collect();
        v.sort();
        v
    };
    let spent = asked(&w);
    assert_eq!(spent.len(), 5, "the five names are looked up once each: {spent:?}");
    for i in 0..8 {
        for name in [
            format!("V{i}.ALLOWED.TEST"),
            format!("v{i}.Allowed.Test."),
            format!("V{i}.allowed.test."),
            format!("v{i}.ALLOWED.test"),
        ] {
            hello_to(name.clone());
            for host in [name.clone(), format!("{name}:80"), format!("{name}:443")] {
                let o = http(&p.work, to80, &get(&host));
                assert!(o.text().starts_with("HTTP/1.1 403"), "{host}: {o:?}");
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = asked(&w);
    let hardened = d.events.try_iter().filter(|e| e["reason"] == "hardening").count();
    eprintln!("escape_76: upstream saw {after:?} (after the spend: {spent:?}); {hardened} refusals for the hardening");
    drop(d);
    // Names, not counts: a spent name asked again once its negative
    // answer expires carries nothing new (and upstream sees it lowercased).
    let names =
        |v: &[((String, &'static str), usize)]| v.iter().map(|((n, _), _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&spent), "variants of spent or new names were looked up past the budget");
    assert!(hardened > 0, "the new names were refused for the budget");
}

#[test]
fn escape_77_a_squatter_on_a_local_non_loopback_dashboard_address_gets_no_key() {
    // DASHBOARD_UID was checked for loopback destinations only, but every
    // address of the pod's shared namespace is as easy to squat: the
    // pod's own eth0 address (what the pod's hostname resolves to in
    // /etc/hosts), or `0.0.0.0` (a connect to it reaches a local
    // listener). A workload (uid 65534) binds the port there first.
    let w = world();
    let p = &w.p;
    let mut got = Vec::new();
    for (bind, host) in
        [(p.v4(1), format!("http://{}:8081", p.v4(1))), ("0.0.0.0".into(), "http://0.0.0.0:8081".into())]
    {
        let squatter = spawn_as(&p.work, Priv::Nobody, &["capture-http", &bind, "8081"]);
        let pol = policy_file("escape-77", ALLOWED);
        let upstream = format!("{}:53", p.v4(2));
        let env = [
            ("DNS_UPSTREAMS", upstream.as_str()),
            ("DASHBOARD_HOST", host.as_str()),
            ("DASHBOARD_API_KEY", DASH_KEY),
            ("DASHBOARD_START_DELAY", "0s"),
        ];
        let d = Daemon::start(&p.work, &pol, &env);
        co_tenant_request(p);
        d.wait_event("http.allowed", "uid", 1000);
        let head = squatter.line(Duration::from_secs(10)).unwrap_or_default();
        eprintln!("escape_77: {host}: the squatter got {} bytes", head.len());
        drop(d);
        drop(squatter);
        got.push((host, head));
    }
    for (host, head) in &got {
        assert!(!head.contains(DASH_KEY), "{host}: the squatter received the dashboard key: {got:?}");
    }
}

#[test]
fn escape_78_no_header_method_or_sign_in_trick_reads_the_pods_dashboard_without_the_key() {
    // escape_51's reader again, with what a lax check might take for a
    // key or a session: empty and prefix keys, a key header twice, Basic
    // and lower-case bearer schemes, a forged session cookie, HEAD, a
    // stream resumed by Last-Event-ID, and an empty key at /login.
    let w = world();
    let p = &w.p;
    let _dash = pod_dashboard(&p.work);
    let d = shipping_daemon(p, "escape-78", &[]);
    co_tenant_request(p);
    d.wait_event("http.allowed", "uid", 1000);
    let key = format!("X-Api-Key: {DASH_KEY}");
    let stored = wait_for(Duration::from_secs(20), || {
        let body = curl(&p.work, &["-H", &key, "http://127.0.0.1:8081/api/v1/logs"]).1;
        (body.contains("co-tenant-secret-path") || body.contains("\"uid\":1000")).then_some(())
    });
    assert!(stored.is_some(), "control: the events reached the dashboard");
    let logs = "http://127.0.0.1:8081/api/v1/logs";
    let stream = "http://127.0.0.1:8081/api/v1/events?since_id=0";
    let prefix = format!("X-Api-Key: {}", &DASH_KEY[..DASH_KEY.len() - 1]);
    let tries: Vec<Vec<String>> = vec![
        vec!["-H".into(), "X-Api-Key:".into(), logs.into()],
        vec!["-H".into(), "X-Api-Key: ".into(), logs.into()],
        vec!["-H".into(), prefix.clone(), logs.into()],
        vec!["-H".into(), prefix, "-H".into(), "X-Api-Key: x".into(), logs.into()],
        vec!["-H".into(), "Authorization: Bearer".into(), logs.into()],
        vec!["-H".into(), "Authorization: bearer ".into(), logs.into()],
        vec!["-H".into(), "Authorization: Basic YXBpLWtleTo=".into(), logs.into()],
        vec!["-H".into(), "Cookie: egret_session=AAAA; egret_login=AAAA".into(), logs.into()],
        vec!["-H".into(), "Cookie: egret_session=".into(), logs.into()],
        vec!["-I".into(), logs.into()],
        vec!["-H".into(), "Last-Event-ID: 0".into(), "-m".into(), "2".into(), stream.into()],
        vec![
            "-H".into(),
            "X-Forwarded-For: 127.0.0.1".into(),
            "-H".into(),
            "Remote-User: admin".into(),
            logs.into(),
        ],
        vec![format!("{logs}?api_key={DASH_KEY}x")],
        vec!["http://127.0.0.1:8081/api/v1/logs?limit=1".into()],
        vec!["http://127.0.0.1:8081/api/v1/session".into()],
    ];
    let mut leaked = Vec::new();
    for args in &tries {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["curl", "-s", "-i", "-m", "3"]).args(args);
        let out = util::run(c).1;
        if out.contains("co-tenant-secret-path") || out.contains("\"uid\":1000") {
            leaked.push(args.clone());
        }
    }
    // A sign-in with an empty or near key gets no session.
    for body in
        [r#"{"key":""}"#.to_owned(), format!(r#"{{"key":"{}"}}"#, &DASH_KEY[..4]), r#"{"key":null}"#.into()]
    {
        let mut c = as_workload(&p.work, Priv::Nobody);
        let script = format!(
            "j=$(mktemp); curl -s -c $j -m 3 http://127.0.0.1:8081/login >/dev/null; t=$(awk '/egret_login/ {{print $7}}' $j); \
             curl -s -b $j -c $j -m 3 -H \"X-CSRF-Token: $t\" -H 'Content-Type: application/json' -d '{body}' http://127.0.0.1:8081/login >/dev/null; \
             curl -s -b $j -m 3 {logs}; rm -f $j"
        );
        c.args(["sh", "-c", &script]);
        let out = util::run(c).1;
        if out.contains("co-tenant-secret-path") || out.contains("\"uid\":1000") {
            leaked.push(vec![format!("login {body}")]);
        }
    }
    eprintln!("escape_78: {} tries, {} read events", tries.len() + 3, leaked.len());
    assert!(leaked.is_empty(), "a workload read events without the key: {leaked:?}");
}

/// uid 1000 asking egret's resolver for `huge.allowed.test` TXT (an
/// answer the upstream truncates over UDP, so egret fetches it again over
/// TCP) as fast as one socket sends, for `secs` seconds.
const TC_FLOOD: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
name = b"\x04huge\x07allowed\x04test\x00\x00\x10" if sys.argv[2] == "tc" else b"\x07allowed\x04test\x00\x00\x01"
q = lambda i: struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 1) + name + b"\x00\x01" + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"
end = time.time() + float(sys.argv[1])
i = n = got = 0
while time.time() < end:
    try:
        s.sendto(q(i & 0xFFFF), ("127.0.0.1", 53))
        n += 1
    except OSError:
        time.sleep(0.001)
    i += 1
    try:
        while True:
            s.recv(65535)
            got += 1
    except OSError:
        pass
print(n, got)
"#;

/// Each lookup's status, whether the answer was whole, how long it took.
type Answers = Vec<(String, bool, Duration)>;

/// Datagrams the kernel dropped at egret's UDP listener on 127.0.0.1:53
/// because its receive buffer was full (the `drops` column of
/// /proc/net/udp): queries egret never saw, so it could neither answer
/// nor log them.
fn dns_listener_drops(ns: &str) -> u64 {
    let udp = in_netns(ns, || std::fs::read_to_string("/proc/thread-self/net/udp").unwrap_or_default());
    udp.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("0100007F:0035"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// One round of [`TC_FLOOD`] (`kind`: "tc" or "a") against egret in DNS
/// mode with `DNS_HARDENING=hardening` and a 0.3 s upstream: whether all
/// four of `nobody`'s lookups of `medium.allowed.test` TXT (an answer
/// egret fetches over TCP) came back whole within 2 s, each with its
/// event, and what they got.
fn tc_flood_round(hardening: &str, kind: &str) -> (bool, Answers) {
    let w = crate::run::world_with(|two, _| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.delay = Duration::from_millis(300);
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-79", "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let env = [("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_HARDENING", hardening)];
    let d = Daemon::start(&p.work, &pol, &env);
    let lost_before = dns_listener_drops(&p.work);
    let mut c = as_workload(&p.work, Priv::User(1000));
    c.args([py3(), "-c", TC_FLOOD, "7", kind]);
    let flood = std::thread::spawn(move || util::run(c).1);
    std::thread::sleep(Duration::from_secs(2));
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", "@127.0.0.1", "medium.allowed.test", "TXT", "+time=3", "+tries=1"]);
        let start = Instant::now();
        let out = util::run(c).1;
        let status = out.split("status: ").nth(1).and_then(|r| r.split(',').next()).unwrap_or("none");
        let full = out.matches("mmmmmmmmmm").count() >= 4;
        answers.push((status.to_owned(), full, start.elapsed()));
        std::thread::sleep(Duration::from_millis(400));
    }
    let sent = flood.join().expect("flood");
    // An answer that comes late still leaves its event: wait for it.
    std::thread::sleep(Duration::from_secs(4));
    let mine: Vec<String> = d
        .events
        .try_iter()
        .filter(|e| e["qname"] == "medium.allowed.test")
        .map(|e| format!("{} {} {} {}", e["msg"], e["rcode"], e["reason"], e["note"]))
        .collect();
    eprintln!("escape_79: the co-tenant's events: {mine:?}");
    let lost = dns_listener_drops(&p.work) - lost_before;
    eprintln!(
        "escape_79: DNS_HARDENING={hardening}, {kind} flood: the flood sent/got {}; the co-tenant got {answers:?}; \
         datagrams the kernel dropped at egret's full listener {lost}",
        sent.trim()
    );
    drop(d);
    // Every query leaves an answer or an event; these must leave both.
    let ok = mine.len() == answers.len()
        && answers
            .iter()
            .all(|(status, full, took)| status == "NOERROR" && *full && *took < Duration::from_secs(2));
    (ok, answers)
}

#[test]
fn escape_79_one_clients_truncated_answers_do_not_take_every_tcp_retry() {
    // A truncated UDP answer is fetched again over TCP on a thread of its
    // own, at most 128 at once across all clients, first come first
    // served. uid 1000 keeps asking for a name whose answer is always
    // truncated: does another client's large answer still come back?
    let (ok, answers) = tc_flood_round("true", "tc");
    assert!(ok, "a co-tenant's large answer was lost or slow: {answers:?}");
}

#[test]
fn escape_80_without_the_hardening_a_sustained_dns_flood_does_not_starve_another_client() {
    // escape_56's per-client backlogs hold "whatever the hardening", but a
    // flooder's datagrams are only dropped unread by the hardening's rate:
    // without it, one socket sending allowed.test A as fast as it can
    // (not a burst: 7 s of it) and a co-tenant meanwhile.
    let (ok, answers) = tc_flood_round("false", "a");
    assert!(ok, "a co-tenant's lookups were lost or slow during the flood: {answers:?}");
}

/// Round 6: default allow with a denylist, names with ports, the fleet.
///
/// The IPv6 forms a NAT64 gateway or SIIT translator turns into the IPv4
/// address `v4`: the well-known /96 and the IPv4-translated one.
fn v4_in_v6_forms(v4: &str) -> Vec<String> {
    let o: Vec<u8> = v4.split('.').map(|b| b.parse().expect("octet")).collect();
    let low =
        format!("{:x}:{:x}", u16::from(o[0]) << 8 | u16::from(o[1]), u16::from(o[2]) << 8 | u16::from(o[3]));
    vec![format!("64:ff9b::{low}"), format!("::ffff:0:{low}")]
}

#[test]
fn escape_81_nat64_and_translated_forms_of_a_denylisted_ipv4_are_denylisted() {
    // `denylist.ips` names an IPv4 address; an IPv6-only pod behind a
    // NAT64 gateway (DNS64 clusters) reaches it as 64:ff9b::a.b.c.d. The
    // upstream plays the gateway: it holds the /96 form as its own
    // address, so a packet that leaves the pod is one that got out.
    let w = world();
    let yaml = format!("default_action: allow\ndenylist:\n  ips: [\"{}\"]\n", w.p.v4(3));
    let pol = policy_file("escape-81", &yaml);
    let upstream = format!("{}:53", w.p.v4(2));
    let d = Daemon::start(&w.p.work, &pol, &[("DNS_UPSTREAMS", upstream.as_str())]);
    let s = Setup { d, w };
    let p = s.p();
    let forms = v4_in_v6_forms(&p.v4(3));
    for f in &forms {
        crate::netns::ip(&["-n", &p.up, "-6", "addr", "add", &format!("{f}/128"), "dev", "eth0", "nodad"]);
        crate::netns::ip(&["-n", &p.work, "-6", "route", "add", &format!("{f}/128"), "via", &p.v6(2)]);
    }
    let addrs = forms.join(",");
    let _echo =
        Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), "7000", "7000", &addrs, &addrs]);
    // Control: the address itself is refused at once.
    let o = tcp(&p.work, s.addr(&p.v4(3), 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert_eq!(o.err, Some(ErrorKind::ConnectionRefused), "{}:7000 {o:?}", p.v4(3));
    let mut reached = Vec::new();
    for f in &forms {
        let o = tcp(&p.work, s.addr(f, 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        if o.text().contains("echo:") {
            reached.push(format!("tcp [{f}]:7000"));
        }
        let r = udp(&p.work, s.addr(f, 7000), b"x");
        if r.0.is_ok() {
            reached.push(format!("udp [{f}]:7000"));
        }
    }
    assert!(reached.is_empty(), "the denylisted {} was reached by its IPv6 forms: {reached:?}", p.v4(3));
}

#[test]
fn escape_82_icmp_errors_quoting_a_named_port_flow_do_not_ride_its_stamp() {
    // A name with ports stamps its flows with a conntrack mark that
    // `ct mark` accepts on every later packet. An ICMP error is judged by
    // the flow it quotes: one quoting the stamped flow but sent to another
    // host must not carry the stamp's permission there.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-82", "allowlist:\n  domains: [\"udp/blocked.test:9\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    d.wait_logged("blocked.test: ", Duration::from_secs(10));
    let sniff = marker_sniffer(p);
    let (two, three, local) = (p.v4(2), p.v4(3), p.v4(1));
    let (two_c, local_c) = (two.clone(), local.clone());
    let sock = in_netns(&p.work, move || {
        let u = UdpSocket::bind(SocketAddr::new(local_c.parse().unwrap(), 0)).expect("bind");
        u.send_to(b"open", SocketAddr::new(two_c.parse().unwrap(), 9)).expect("send");
        u
    });
    let port = sock.local_addr().expect("addr").port().to_string();
    let error = |to: &str| attack_py(&p.work, Priv::NetRaw, &["icmp-error", to, &two, "9", &local, &port]);
    while sniff.line(Duration::from_millis(200)).is_some() {}
    let out = error(&two);
    assert!(
        sniff.line(Duration::from_secs(2)).is_some(),
        "control: the error to {two} never arrived ({out})"
    );
    while sniff.line(Duration::from_millis(200)).is_some() {}
    let out = error(&three);
    assert_eq!(
        sniff.line(Duration::from_millis(700)),
        None,
        "an ICMP error quoting the stamped flow to {two} reached {three} ({out})"
    );
    drop(sock);
}

/// The standard zone plus `evil.test` at the upstream's .3 and
/// `alias.test`, a CNAME to it.
fn cname_world() -> World {
    cname_world_with(300, Duration::ZERO)
}

/// [`cname_world`] with every record's TTL `ttl` and the upstream taking
/// `delay` per answer (round 10's slow lookups).
fn cname_world_with(ttl: u32, delay: Duration) -> World {
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData};
    crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, ttl);
        z.records.push(("evil.test".into(), ttl, RData::A(A(three))));
        let target = Name::from_ascii("evil.test.").expect("name");
        z.records.push(("alias.test".into(), ttl, RData::CNAME(CNAME(target))));
        z.delay = delay;
        z
    })
}

/// `dig NAME A +short` from the workload through egret's resolver.
fn dig_short(p: &Pair, name: &str) -> String {
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args(["dig", &format!("@{}", p.v4(2)), name, "A", "+short", "+time=2", "+tries=1"]);
    util::run(c).1
}

#[test]
fn escape_83_a_cname_chain_ending_at_a_denylisted_name_is_not_served() {
    // The denylist names evil.test; alias.test (not denylisted) is a
    // CNAME to it. The resolver judges the question only: does it serve
    // the chain, evil.test's address and all (and, in strict mode, open
    // that address)?
    let mut found = Vec::new();
    for (mode, yaml) in [
        ("dns", "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n"),
        (
            "dns-strict",
            "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\ndenylist:\n  domains: [\"evil.test\"]\n",
        ),
    ] {
        let w = cname_world();
        let p = &w.p;
        let pol = policy_file(&format!("escape-83-{mode}"), yaml);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", mode), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "7000", "7000");
        // Control: the denylisted name itself is refused.
        let direct = dig_short(p, "evil.test");
        assert!(!direct.contains(&p.v4(3)), "{mode}: evil.test itself was served: {direct}");
        let chained = dig_short(p, "alias.test");
        if chained.contains(&p.v4(3)) {
            found.push(format!("{mode}: alias.test served evil.test's {}: {}", p.v4(3), chained.trim()));
        } else {
            // The refusal's event names the question and the link.
            let ev = wait_for(Duration::from_secs(10), || {
                d.events.try_iter().find(|e| e["qname"] == "alias.test" && e["action"] == "BLOCKED")
            });
            let says = ev.as_ref().is_some_and(|e| {
                e["reason"] == "denylisted" && e["note"].as_str().is_some_and(|n| n.contains("evil.test"))
            });
            if !says {
                found.push(format!("{mode}: alias.test's refusal does not name evil.test: {ev:?}"));
            }
        }
        if mode == "dns-strict" {
            let o = tcp(&p.work, s_addr(&p.v4(3), 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
            if o.text().contains("echo:") {
                found.push(format!("{mode}: evil.test's {} opened by the chain", p.v4(3)));
            }
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_84_denylisted_host_and_sni_variants_under_the_default_allow() {
    // `default_action: allow`, blocked.test denylisted. blocked.test and
    // allowed.test both resolve to .2: every variant below is a request
    // for blocked.test's server, and must be refused, not passed as
    // "some other name".
    let s = setup("84", "default_action: allow\ndenylist:\n  domains: [\"blocked.test\"]\n", &[]);
    let p = s.p();
    let to80 = s.addr(&p.v4(2), 80);
    let to443 = s.addr(&p.v4(2), 443);
    // Control: a name not denylisted is served.
    let o = http(&p.work, to80, &get("allowed.test"));
    assert!(o.text().contains("hello from"), "control: {o:?}");
    let mut passed = Vec::new();
    let heads: Vec<(&str, String)> = vec![
        ("upper case", get("BLOCKED.TEST")),
        ("trailing dot", get("blocked.test.")),
        ("port", get("blocked.test:80")),
        ("dot and port", get("blocked.test.:80")),
        ("two trailing dots", get("blocked.test..")),
        ("leading dot", get(".blocked.test")),
        ("percent-encoded", get("%62locked.test")),
        ("userinfo", get("x@blocked.test")),
        ("tab after", "GET / HTTP/1.1\r\nHost: blocked.test\t\r\nConnection: close\r\n\r\n".into()),
        ("two Host headers", "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: blocked.test\r\nConnection: close\r\n\r\n".into()),
        ("Host list", "GET / HTTP/1.1\r\nHost: allowed.test, blocked.test\r\nConnection: close\r\n\r\n".into()),
        ("absolute form", "GET http://blocked.test/ HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n".into()),
        ("absolute form, no Host", "GET http://blocked.test/ HTTP/1.0\r\n\r\n".into()),
        ("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n".into()),
        ("CONNECT", "CONNECT blocked.test:443 HTTP/1.1\r\nHost: blocked.test:443\r\n\r\n".into()),
        ("CONNECT, allowed Host", "CONNECT blocked.test:443 HTTP/1.1\r\nHost: allowed.test\r\n\r\n".into()),
        ("X-Forwarded-Host", "GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Forwarded-Host: blocked.test\r\nConnection: close\r\n\r\n".into()),
        ("space before colon", "GET / HTTP/1.1\r\nHost : allowed.test\r\nHost: blocked.test\r\nConnection: close\r\n\r\n".into()),
        ("fullwidth dot", get("blocked\u{ff0e}test")),
    ];
    for (what, head) in &heads {
        let o = http(&p.work, to80, head);
        let t = o.text();
        if t.contains("hello from") || t.contains("echo:") {
            // X-Forwarded-Host is a header the upstream may read, not
            // egret's name: only a pass of blocked.test's own name counts.
            if *what != "X-Forwarded-Host" {
                passed.push(format!("http {what}: {}", t.lines().next().unwrap_or("")));
            }
        }
    }
    for sni in
        [&b"BLOCKED.TEST"[..], b"blocked.test.", b"Blocked.Test.", b"blocked.test..", b"blocked.test\0"]
    {
        // No TLS server at .2: the proxy's verdict is in its event.
        while s.d.events.try_iter().next().is_some() {}
        let _ = tls(&p.work, to443, hello(Some(sni), 0));
        let ev = s.event_where(|e| e["msg"].as_str().is_some_and(|m| m.starts_with("https.")));
        if ev["action"] != "BLOCKED" {
            passed.push(format!("tls {:?}: {ev}", String::from_utf8_lossy(sni)));
        }
    }
    // A hello without SNI: nothing says it is not blocked.test.
    while s.d.events.try_iter().next().is_some() {}
    let _ = tls(&p.work, to443, hello(None, 0));
    let ev = s.event_where(|e| e["msg"].as_str().is_some_and(|m| m.starts_with("https.")));
    if ev["action"] != "BLOCKED" {
        passed.push(format!("tls without SNI: {ev}"));
    }
    // Control: an allowed SNI is passed on (its event says so).
    while s.d.events.try_iter().next().is_some() {}
    let _ = tls(&p.work, to443, hello(Some(b"allowed.test"), 0));
    let ev = s.event_where(|e| e["msg"].as_str().is_some_and(|m| m.starts_with("https.")));
    assert_eq!(ev["action"], "ALLOWED", "control: {ev}");
    assert!(passed.is_empty(), "{passed:?}");
}

#[test]
fn escape_85_a_named_port_flow_does_not_outlive_a_reload_that_removes_the_name() {
    // `tcp/blocked.test:7000` opens .2:7000; a connection opened in time
    // outlives the TTL, "not a reload". The workload keeps one open, the
    // entry is removed, and it goes on writing.
    let w = world();
    let p = &w.p;
    let addrs = p.v4(2);
    let _srv =
        Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), "7000", "", &addrs, &addrs]);
    let pol =
        policy_file("escape-85", "allowlist:\n  domains: [\"allowed.test\", \"tcp/blocked.test:7000\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    d.wait_logged("blocked.test: ", Duration::from_secs(10));
    let to = s_addr(&p.v4(2), 7000);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (otx, orx) = std::sync::mpsc::channel::<String>();
    let held = std::thread::spawn({
        let ns = p.work.clone();
        move || {
            in_netns(&ns, move || {
                let mut s = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT).expect("connect while open");
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 256];
                s.write_all(b"before\n").unwrap();
                let n = s.read(&mut buf).unwrap_or(0);
                otx.send(util::text(&buf[..n])).unwrap();
                rx.recv_timeout(Duration::from_secs(30)).expect("go on");
                let after = match s.write_all(b"after\n") {
                    Err(e) => format!("write: {e}"),
                    Ok(()) => match s.read(&mut buf) {
                        Ok(n) => util::text(&buf[..n]),
                        Err(e) => format!("read: {e}"),
                    },
                };
                otx.send(after).unwrap();
            })
        }
    });
    let before = orx.recv_timeout(Duration::from_secs(10)).expect("before");
    assert!(before.contains("echo:"), "control: the open entry's port is not served: {before}");
    std::fs::write(&pol, "allowlist:\n  domains: [\"allowed.test\"]\n").expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    tx.send(()).unwrap();
    let after = orx.recv_timeout(Duration::from_secs(10)).expect("after");
    held.join().expect("holder");
    assert!(!after.contains("echo:"), "the flow outlived the reload that removed its entry: {after}");
    // And a new connection is refused.
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(!o.text().contains("echo:"), "a new connection after the reload: {o:?}");
}

#[test]
fn escape_86_fragments_and_other_protocols_to_denylisted_addresses_and_ports_stay_in() {
    // Default allow: only the denylist stops anything. .3 is denylisted
    // on every port and protocol, .2 on UDP 7000 only (`th dport`, which
    // a later fragment alone does not carry).
    let w = world();
    let p = &w.p;
    let yaml = format!(
        "default_action: allow\ndenylist:\n  ips: [\"{}\", \"{}\", \"udp/{}:7000\", \"udp/[{}]:7000\"]\n",
        p.v4(3),
        p.v6(3),
        p.v4(2),
        p.v6(2)
    );
    let pol = policy_file("escape-86", &yaml);
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let sniff = marker_sniffer(p);
    let mut left = Vec::new();
    for (two, three, src) in [(p.v4(2), p.v4(3), p.v4(1)), (p.v6(2), p.v6(3), p.v6(1))] {
        while sniff.line(Duration::from_millis(200)).is_some() {}
        // Control: fragments to a port no entry names arrive.
        let out = attack_py(&p.work, Priv::NetRaw, &["frag", &src, &two, "9", "all"]);
        assert!(
            sniff.line(Duration::from_secs(2)).is_some(),
            "control: fragments to {two}:9 never arrived ({out})"
        );
        while sniff.line(Duration::from_millis(200)).is_some() {}
        let mut cases: Vec<(Priv, Vec<String>)> = Vec::new();
        for part in ["all", "first", "later"] {
            for dst in [&two, &three] {
                cases.push((
                    Priv::NetRaw,
                    vec!["frag".into(), src.clone(), dst.clone(), "7000".into(), part.into()],
                ));
            }
        }
        for proto in ["47", "132", "253"] {
            cases.push((Priv::NetRaw, vec!["rawproto".into(), three.clone(), proto.into()]));
        }
        cases.push((Priv::Nobody, vec!["udplite".into(), three.clone(), "7000".into()]));
        for (who, args) in cases {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = attack_py(&p.work, who, &refs);
            if sniff.line(Duration::from_millis(700)).is_some() {
                left.push(format!("{args:?} ({})", out.trim()));
                while sniff.line(Duration::from_millis(200)).is_some() {}
            }
        }
    }
    assert!(left.is_empty(), "left the pod: {left:?}");
}

/// A DNS query with the questions given (raw labels, type), RD set.
fn raw_questions(qs: &[(&[&[u8]], u16)]) -> Vec<u8> {
    let mut q = vec![0x52, 0x52, 0x01, 0x00, 0, qs.len() as u8, 0, 0, 0, 0, 0, 0];
    for (labels, qtype) in qs {
        for l in *labels {
            q.push(l.len() as u8);
            q.extend(*l);
        }
        q.push(0);
        q.extend(qtype.to_be_bytes());
        q.extend([0, 1]);
    }
    q
}

#[test]
fn escape_87_denylisted_name_variants_and_query_shapes_in_dns_mode() {
    // DNS mode, default allow, blocked.test denylisted: case, every type,
    // and a second question behind an allowed first one. An answer with
    // records (rcode NOERROR, ANCOUNT > 0) is the name served.
    let w = world();
    let p = &w.p;
    let pol = policy_file("escape-87", "default_action: allow\ndenylist:\n  domains: [\"blocked.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let server = s_addr(&p.v4(2), 53);
    let served = |q: Vec<u8>| -> Option<String> {
        let (r, _) = udp(&p.work, server, &q);
        let r = r.ok()?;
        let (rcode, ancount) = (r.get(3)? & 0x0f, u16::from_be_bytes([*r.get(6)?, *r.get(7)?]));
        (rcode == 0 && ancount > 0).then(|| format!("rcode {rcode}, {ancount} answers"))
    };
    let allowed: &[&[u8]] = &[b"allowed", b"test"];
    assert!(served(raw_questions(&[(allowed, 1)])).is_some(), "control: allowed.test A not served");
    let mut got = Vec::new();
    let names: [&[&[u8]]; 3] = [&[b"blocked", b"test"], &[b"BLOCKED", b"TEST"], &[b"bLoCkEd", b"tEsT"]];
    for labels in names {
        for qtype in [1u16, 28, 16, 15, 5, 255, 65, 64] {
            if let Some(r) = served(raw_questions(&[(labels, qtype)])) {
                got.push(format!("{labels:?} type {qtype}: {r}"));
            }
        }
    }
    let blocked: &[&[u8]] = &[b"blocked", b"test"];
    if let Some(r) = served(raw_questions(&[(allowed, 1), (blocked, 1)])) {
        got.push(format!("allowed.test then blocked.test in one query: {r}"));
    }
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn escape_88_a_denylist_entry_written_as_an_ipv4_mapped_address_denies_its_ipv4_self() {
    // `::ffff:a.b.c.d` is a.b.c.d on the wire (an AF_INET6 socket sends
    // IPv4 to it). As a denylist entry it must refuse that address, not
    // sit in denied6, which no packet to it ever matches.
    let w = world();
    let yaml = format!("default_action: allow\ndenylist:\n  ips: [\"::ffff:{}\"]\n", w.p.v4(3));
    let pol = policy_file("escape-88", &yaml);
    let upstream = format!("{}:53", w.p.v4(2));
    let d = Daemon::start(&w.p.work, &pol, &[("DNS_UPSTREAMS", upstream.as_str())]);
    let s = Setup { d, w };
    let p = s.p();
    let _echo = forbidden_echo(p, "7000", "7000");
    let mut reached = Vec::new();
    for to in [p.v4(3), format!("::ffff:{}", p.v4(3))] {
        let o = tcp(&p.work, s.addr(&to, 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        if o.text().contains("echo:") {
            reached.push(format!("tcp {to}:7000"));
        }
        if udp(&p.work, s.addr(&to, 7000), b"x").0.is_ok() {
            reached.push(format!("udp {to}:7000"));
        }
    }
    assert!(reached.is_empty(), "the denylisted ::ffff:{} was reached: {reached:?}", p.v4(3));
}

#[test]
fn escape_89_a_denylisted_host_behind_an_allowed_one_on_a_kept_alive_connection() {
    // Default allow: the first request names a name that passes, the
    // next (pipelined, then after a pause) the denylisted blocked.test.
    let s = setup("89", "default_action: allow\ndenylist:\n  domains: [\"blocked.test\"]\n", &[]);
    let p = s.p();
    let to = s.addr(&p.v4(2), 80);
    let keep = |h: &str| format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let both = format!("{}{}", keep("allowed.test"), get("blocked.test"));
    let o = tcp(&p.work, to, vec![both.into_bytes()], Duration::ZERO, CLIENT_TIMEOUT);
    let pipelined = o.text().matches("hello from").count();
    let o = tcp(
        &p.work,
        to,
        vec![keep("allowed.test").into_bytes(), get("blocked.test").into_bytes()],
        Duration::from_millis(300),
        CLIENT_TIMEOUT,
    );
    let paused = o.text().matches("hello from").count();
    assert!(
        pipelined <= 1 && paused <= 1,
        "blocked.test served on a kept-alive connection: {pipelined} / {paused} answers"
    );
    let ev = s.event_where(|e| e["msg"] == "http.blocked");
    assert_eq!(ev["reason"], "denylisted", "{ev}");
}

#[test]
fn escape_90_a_cname_to_a_name_with_ports_does_not_open_its_address_on_every_port() {
    // Strict DNS mode: evil.test may be reached on TCP 7001 only
    // (`tcp/evil.test:7001`); alias.test is allowed outright and is a
    // CNAME to evil.test. Asking for alias.test must not open evil.test's
    // address on every port.
    let w = cname_world();
    let p = &w.p;
    let pol = policy_file("escape-90", "allowlist:\n  domains: [\"alias.test\", \"tcp/evil.test:7001\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let _d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000,7001", "7000");
    let to = s_addr(&p.v4(3), 7000);
    let direct = dig_short(p, "evil.test");
    assert!(direct.contains(&p.v4(3)), "control: evil.test (a name with ports) resolves: {direct}");
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(
        !o.text().contains("echo:"),
        "control: evil.test's answer opened a port its entry does not name: {o:?}"
    );
    let chained = dig_short(p, "alias.test");
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(
        !o.text().contains("echo:"),
        "alias.test ({}) opened evil.test's {} on TCP 7000, a port its entry does not name",
        chained.trim().replace('\n', " "),
        p.v4(3)
    );
    // The entry's own port stays open (the chain opened it, or
    // evil.test's own answer did): the limit, not a refusal.
    let o = tcp(&p.work, s_addr(&p.v4(3), 7001), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(o.text().contains("echo:"), "evil.test's own port 7001 was closed: {o:?}");
}

#[test]
fn escape_91_icmp_errors_and_pings_to_a_denylisted_host_under_the_default_allow() {
    // Default allow, .3 denylisted: an ICMP error quoting a flow to .2
    // (which passes) but sent to .3, and echo requests to .3, v4 and v6.
    let w = world();
    let p = &w.p;
    let yaml = format!("default_action: allow\ndenylist:\n  ips: [\"{}\", \"{}\"]\n", p.v4(3), p.v6(3));
    let pol = policy_file("escape-91", &yaml);
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let sniff = marker_sniffer(p);
    for (two, three, local) in [(p.v4(2), p.v4(3), p.v4(1)), (p.v6(2), p.v6(3), p.v6(1))] {
        let (two_c, local_c) = (two.clone(), local.clone());
        let sock = in_netns(&p.work, move || {
            let u = UdpSocket::bind(SocketAddr::new(local_c.parse().unwrap(), 0)).expect("bind");
            u.send_to(b"open", SocketAddr::new(two_c.parse().unwrap(), 9)).expect("send");
            u
        });
        let port = sock.local_addr().expect("addr").port().to_string();
        let error =
            |to: &str| attack_py(&p.work, Priv::NetRaw, &["icmp-error", to, &two, "9", &local, &port]);
        while sniff.line(Duration::from_millis(200)).is_some() {}
        let out = error(&two);
        assert!(
            sniff.line(Duration::from_secs(2)).is_some(),
            "control: the error to {two} never arrived ({out})"
        );
        while sniff.line(Duration::from_millis(200)).is_some() {}
        let out = error(&three);
        assert_eq!(
            sniff.line(Duration::from_millis(700)),
            None,
            "an ICMP error quoting the flow to {two} reached the denylisted {three} ({out})"
        );
        drop(sock);
        let mut c = as_workload(&p.work, Priv::NetRaw);
        c.args(["ping", "-c", "1", "-W", "1", &three]);
        let (code, out, _) = util::run(c);
        assert_ne!(code, 0, "ping reached the denylisted {three}: {out}");
    }
}

#[test]
fn escape_92_quic_to_a_denylisted_name_under_the_default_allow() {
    // Default allow, blocked.test denylisted by name. TCP 443 goes to the
    // proxy, which reads the SNI; HTTP/3 (QUIC, UDP 443) carries the same
    // SNI in its Initial packet, which no proxy reads. A client that
    // speaks HTTP/3 to blocked.test's address gets there by its name.
    let w = world();
    let p = &w.p;
    let addrs = p.v4(2);
    let _srv = Pair::spawn_ready(&p.up, py3(), &[&crate::nft::data("servers.py"), "", "443", &addrs, &addrs]);
    let pol = policy_file("escape-92", "default_action: allow\ndenylist:\n  domains: [\"blocked.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    // Control: TCP 443 naming blocked.test is refused by the proxy.
    let o = tls(&p.work, s_addr(&p.v4(2), 443), hello(Some(b"blocked.test"), 0));
    assert!(o.reply.is_empty(), "control: TLS to blocked.test answered: {o:?}");
    // A QUIC long-header Initial (version 1) with the hello as its
    // payload: the bytes that name blocked.test, on UDP 443.
    let mut initial = vec![0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0];
    initial.extend(hello(Some(b"blocked.test"), 0));
    initial.resize(1200, 0);
    let r = udp(&p.work, s_addr(&p.v4(2), 443), &initial);
    assert!(
        r.0.is_err(),
        "UDP 443 (QUIC) carrying the SNI blocked.test reached blocked.test's address: {} bytes back",
        r.0.as_ref().map(Vec::len).unwrap_or(0)
    );
    // Refused at once, so an HTTP/3 client falls back to TCP fast.
    assert_udp_refused_fast(&r, "QUIC to blocked.test's address");
}

#[test]
fn escape_93_an_owner_past_its_log_limit_does_not_spend_the_shared_bucket() {
    // A lookup in `log_owners` spends the element's limit a second time,
    // so "tracked, over its limit" was asked where it fails for an owner
    // past its limit, whose packets then fell through to the shared
    // bucket kept for packets with no socket and owners the full meter
    // cannot take: one flooding owner spent that bucket too, and its own
    // limit let half its burst through. Asked of the plain `log_known`
    // set, an owner is logged at its own limit and no more.
    let s = setup("93", ALLOWED, &[]);
    let p = s.p();
    let out = attack_py(&p.work, Priv::User(1000), &["log-flood", &p.v4(3), "7030", "1"]);
    eprintln!("escape_93: uid 1000 sent {}", out.trim());
    let mut logged = 0usize;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        match s.d.events.recv_timeout(Duration::from_millis(200)) {
            Ok(e) if e["msg"] == "nflog.event" && e["destination_port"] == 7030 => logged += 1,
            _ => {}
        }
    }
    // Its own limit: a burst of LOG_BURST and LOG_RATE_PER_SECOND for the
    // second it flooded, with room for timing; the shared bucket's burst
    // on top is what must not be there.
    let own = egret::nft::ruleset::LOG_BURST as usize + egret::nft::ruleset::LOG_RATE_PER_SECOND as usize;
    eprintln!("escape_93: {logged} of uid 1000's blocked datagrams logged (its own limit: about {own})");
    assert!(
        logged >= egret::nft::ruleset::LOG_BURST as usize / 2,
        "control: the flood was logged at all ({logged})"
    );
    assert!(
        logged <= own + 10,
        "{logged} logged: the flooder's excess spilled into the shared bucket (own limit about {own})"
    );
}

#[test]
fn escape_150_an_https_check_lookup_through_a_denylisted_link_is_refused() {
    // HTTPS mode, `default_action: allow`, alias.test a CNAME to
    // evil.test. A request for alias.test sent to evil.test's address
    // passes the name check (alias.test is not denylisted) and the
    // destination check (the chain resolves to that address): the
    // proxies' lookup must judge the chain as DNS mode does, also when the
    // chain was cached before a reload denylisted evil.test.
    let w = cname_world();
    let p = &w.p;
    let open = "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n";
    let pol = policy_file("escape-150", open);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let to = s_addr(&p.v4(3), 80);
    let o = http(&p.work, to, &get("alias.test"));
    assert!(o.text().contains("hello from"), "control: alias.test is not served before the denylist: {o:?}");
    std::fs::write(&pol, "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n").expect("rewrite");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let o = http(&p.work, to, &get("evil.test"));
    o.assert_not_served("control: evil.test itself");
    let o = http(&p.work, to, &get("alias.test"));
    o.assert_not_served("alias.test through the chain to evil.test");
    o.assert_fast("alias.test through the chain to evil.test");
    let ev = wait_for(Duration::from_secs(10), || {
        d.events.try_iter().find(|e| e["http_host"] == "alias.test" && e["action"] == "BLOCKED")
    })
    .expect("a BLOCKED event for alias.test");
    assert_eq!(ev["reason"], "denylisted", "{ev}");
    assert!(ev["note"].as_str().is_some_and(|n| n.contains("evil.test")), "the note names the link: {ev}");
}

#[test]
fn escape_151_a_reload_that_denylists_a_link_does_not_replay_its_address() {
    // Strict DNS mode: alias.test (CNAME to evil.test) is answered and
    // evil.test's address learned under the question alias.test. A
    // reload then denylists evil.test: the learned sets are refilled
    // from the names the new policy allows, and alias.test still is,
    // but not through its chain.
    let w = cname_world();
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let pol = policy_file("escape-151", allow);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    let answer = dig_short(p, "alias.test");
    assert!(answer.contains(&p.v4(3)), "control: alias.test is not answered: {answer}");
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(o.text().contains("echo:"), "control: the learned address is not open: {o:?}");
    std::fs::write(&pol, format!("{allow}denylist:\n  domains: [\"evil.test\"]\n")).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    d.wait_logged("learned addresses restored", Duration::from_secs(10));
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(!o.text().contains("echo:"), "evil.test's address came back under alias.test: {o:?}");
}

// ---------------------------------------------------------------------------
// Round 7: spreading a flood over uids, the kernel's per-uid meters.

/// Elements of set `name` in egret's table.
fn set_count(ns: &str, name: &str) -> usize {
    let mut c = Pair::exec(ns, "nft");
    c.args(["list", "set", "inet", "egret", name]);
    let (_, out, _) = util::run(c);
    out.matches(" expires ").count()
}

/// Four lookups of allowed.test at egret's resolver as `who`, each from
/// a fresh socket, 0.5 s apart: how many were answered, the slowest.
fn digs_as(p: &Pair, who: Priv) -> (usize, Duration) {
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    for _ in 0..4 {
        let mut c = as_workload(&p.work, who);
        c.args(["dig", "@127.0.0.1", "allowed.test", "A", "+time=2", "+tries=1"]);
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        worst = worst.max(start.elapsed());
        answered += usize::from(out.contains("status: NOERROR"));
        let status = out.split("status: ").nth(1).and_then(|r| r.split(',').next()).unwrap_or("none");
        eprintln!("dig as {who:?}: {status} in {:?}", start.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    (answered, worst)
}

#[test]
#[ignore = "round-7 finding: with the per-uid DNS meter filled by 4,096 uids, a flood from uids past it spends the one bucket a new co-tenant shares (0 of 4 lookups answered)"]
fn escape_94_a_full_dns_owner_meter_does_not_put_a_new_co_tenant_in_a_flooded_bucket() {
    // A root workload (CAP_SETUID, a runtime default) sends one port-53
    // datagram under each of 4,096 uids: the kernel's per-uid DNS meter
    // (`dns_known`/`dns_owners`, 4,096 uids, 60 s) is full. Then sockets
    // under 8 more uids flood port 53: owners the meter cannot take share
    // one bucket, and so does a co-tenant not in the meter (new, or idle
    // for a minute). uid 1000, asking before the fill, is the control
    // with a bucket of its own.
    let s = setup("94", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let (early, _) = digs_as(p, Priv::User(1000));
    assert_eq!(early, 4, "control: uid 1000 answered before anything");
    let out = attack_py(&p.work, Priv::Container, &["owner-fill", "127.0.0.1", "53", "200000", "4096"]);
    let known = set_count(&p.work, "dns_known");
    eprintln!("escape_94: the filler sent {}; dns_known holds {known} uids", out.trim());
    assert_eq!(known, 4096, "the meter is full");
    // Full, no flood: a new owner shares the spare bucket and is answered.
    let (quiet, _) = digs_as(p, Priv::Nobody);
    assert_eq!(quiet, 4, "control: a new owner answered with the meter full and no flood");
    let flood = {
        let ns = p.work.clone();
        std::thread::spawn(move || {
            attack_py(&ns, Priv::Container, &["owners-flood", "127.0.0.1", "53", "300000", "8", "12"])
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let (known_owner, known_worst) = digs_as(p, Priv::User(1000));
    let (new_owner, new_worst) = digs_as(p, Priv::Nobody);
    let sent = flood.join().expect("flood");
    eprintln!(
        "escape_94: flood {}; uid 1000 (in the meter) answered {known_owner}/4 (slowest {known_worst:?}), \
         uid 65534 (not in it) {new_owner}/4 (slowest {new_worst:?})",
        sent.trim()
    );
    assert_eq!(known_owner, 4, "an owner in the meter lost lookups to the flood");
    assert_eq!(new_owner, 4, "an owner the full meter could not take lost its lookups to the flood");
}

#[test]
#[ignore = "round-7 finding: a fresh-socket flood over 16 uids (each under the kernel's 1,000/s) spends the 4,000/s owner lookups; a co-tenant's new-port queries are dropped unread (2-3 of 4 answered)"]
fn escape_95_a_fresh_socket_flood_spread_over_uids_does_not_spend_another_clients_owner_lookups() {
    // escape_75's fresh socket per datagram, closed once sent, each under
    // the next of N uids (seteuid around socket(), CAP_SETUID): each uid
    // stays within the kernel's 1,000 a second, together up to N,000 new
    // source ports a second. Past the 4,000 owner lookups egret spends a
    // second, a new port shares the 200/s unknown bucket, then is dropped
    // unread, and every dig asks from a new port. Control: 3 uids, under
    // the lookup budget, the same machine load from one process.
    let s = setup("95", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let mut got = Vec::new();
    for uids in ["3", "16"] {
        let flood = spawn_as(
            &p.work,
            Priv::Container,
            &["fresh-uids-flood", "127.0.0.1", "53", "400000", uids, "14"],
        );
        std::thread::sleep(Duration::from_millis(1500));
        let lost_before = dns_listener_drops(&p.work);
        let (answered, worst) = digs_as(p, Priv::Nobody);
        let lost = dns_listener_drops(&p.work) - lost_before;
        let stats = flood.line(Duration::from_secs(15)).unwrap_or_default();
        drop(flood);
        eprintln!(
            "escape_95: {uids} uids: flood {stats}; the other client answered {answered}/4, slowest {worst:?}; \
             datagrams dropped at egret's full listener {lost}"
        );
        got.push((uids, answered, lost));
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(alive(s.d.child.id()), "egret died");
    assert_eq!(got[0].1, 4, "control: 3 uids, under the lookup budget: {got:?}");
    assert_eq!(
        got[1].1, 4,
        "another client's lookups were dropped while 16 uids spent the owner lookups: {got:?}"
    );
}

#[test]
#[ignore = "round-7 finding: with log_known filled by 4,096 uids, 8 uids past it spend the shared 20/s fallback and a new owner's blocked packet goes unlogged (a case of the README's shared-total limit)"]
fn escape_96_a_full_log_owner_meter_and_a_flood_from_uids_past_it_do_not_hide_a_new_owner() {
    // escape_70 filled `log_owners`/`log_known` (4,096 uids, 60 s) and
    // showed a new owner is still logged under the 20/s fallback. Now
    // 8 more uids, past the full meter, flood blocked datagrams: they
    // spend that fallback, which is also every new owner's. Control: one
    // datagram from a new owner with the meter full and no flood.
    let s = setup("96", ALLOWED, &[]);
    let p = s.p();
    let out = attack_py(&p.work, Priv::Container, &["owner-fill", &p.v4(3), "7040", "200000", "4096"]);
    eprintln!(
        "escape_96: the filler sent {}; log_known holds {}",
        out.trim(),
        set_count(&p.work, "log_known")
    );
    std::thread::sleep(Duration::from_secs(3));
    while s.d.events.try_recv().is_ok() {}
    // One datagram from a new owner, as an ordinary refused attempt is.
    let one = |who: Priv, port: u16| {
        let mut c = as_workload(&p.work, who);
        let send = format!(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{}', {port}))",
            p.v4(3)
        );
        c.args([py3(), "-c", &send]);
        util::run(c);
        wait_for(Duration::from_secs(5), || {
            s.d.events.try_iter().find(|e| e["msg"] == "nflog.event" && e["destination_port"] == port)
        })
        .is_some()
    };
    assert!(one(Priv::User(1001), 7043), "control: a new owner logged with the meter full and no flood");
    let flood = {
        let (ns, to) = (p.work.clone(), p.v4(3));
        std::thread::spawn(move || {
            attack_py(&ns, Priv::Container, &["owners-flood", &to, "7041", "300000", "8", "6"])
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let logged = one(Priv::Nobody, 7042);
    let sent = flood.join().expect("flood");
    eprintln!("escape_96: the flood sent {}; the new owner's datagram logged: {logged}", sent.trim());
    assert!(logged, "8 uids past the full meter hid a new owner's blocked packets");
}

/// The open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn escape_97_dns_tcp_clients_and_retries_do_not_run_https_mode_out_of_descriptors() {
    // Round 6's lead: in HTTPS mode with DNS_IN_HTTPS_MODE=true, the DNS
    // server's TCP clients (128) and its TCP re-fetches of truncated
    // answers (128) sit outside the proxies' descriptor budget
    // (RLIMIT_NOFILE - 256). One container (its own cgroup) holds its share
    // of the proxies' descriptors with idle connections, its share of
    // the DNS TCP slots with trickled queries, and keeps asking for an
    // always-truncated answer from a 2 s upstream (each re-fetch holds a
    // socket); another container's request meanwhile.
    let cg = Cgroups::mount("97", &["hog", "other"]);
    let w = crate::run::world_with(|two, _| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.delay = Duration::from_millis(2000);
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-97", "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start_with_nofile(
        &p.work,
        &pol,
        &[("DNS_UPSTREAMS", &upstream), ("HEADER_TIMEOUT", "30s"), ("DNS_IN_HTTPS_MODE", "true")],
        1024,
    );
    let base = fd_count(d.child.id());
    let in_hog = |args: &[&str]| {
        let mut cmd = setpriv_args(Priv::Root);
        cmd.insert(0, "setpriv".into());
        cmd.extend(args.iter().map(|a| a.to_string()));
        let sh = cg.run_in("hog", &cmd);
        Pair::spawn_ready(&p.work, "sh", &sh.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let attack = util::public("netns/attack.py");
    let web = in_hog(&[py3(), &attack, "hold-tcp", &p.v4(2), "80", "1100"]);
    let dns = in_hog(&[py3(), &attack, "hold-tcp", "127.0.0.1", "53", "130", "trickle"]);
    let web_open = web.line(Duration::from_secs(60)).unwrap_or_default();
    let dns_open = dns.line(Duration::from_secs(30)).unwrap_or_default();
    let mut tc = setpriv_args(Priv::Root);
    tc.insert(0, "setpriv".into());
    tc.extend([py3().to_owned(), "-c".into(), TC_FLOOD.into(), "25".into(), "tc".into()]);
    let mut c = Pair::exec(&p.work, "sh");
    c.args(cg.run_in("hog", &tc));
    let flood = std::thread::spawn(move || util::run(c).1);
    std::thread::sleep(Duration::from_secs(4));
    let held = fd_count(d.child.id());
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    let mut outs = Vec::new();
    for _ in 0..3 {
        let mut curl = setpriv_args(Priv::Root);
        curl.insert(0, "setpriv".into());
        curl.extend(
            ["curl", "-s", "-m", "8", "-w", "\n%{http_code}", "--resolve", &resolve, "http://allowed.test/"]
                .map(String::from),
        );
        let mut c = Pair::exec(&p.work, "sh");
        c.args(cg.run_in("other", &curl));
        let (_, out, _) = util::run(c);
        outs.push(out.lines().last().unwrap_or("none").to_owned());
        std::thread::sleep(Duration::from_millis(500));
    }
    let peak = fd_count(d.child.id());
    let sent = flood.join().expect("flood");
    eprintln!(
        "escape_97: the container holds web {web_open}, dns {dns_open}, tc flood {}; egret's descriptors: \
         {base} at start, {held} held, {peak} after; the other container got {outs:?}",
        sent.trim()
    );
    assert!(alive(d.child.id()), "egret died");
    assert!(outs.iter().all(|o| o == "200"), "the other container's requests failed: {outs:?}");
    drop((web, dns));
}

#[test]
fn escape_98_a_cname_chain_to_a_denylisted_name_over_tcp_and_in_other_query_types() {
    // escape_83's chain (alias.test CNAME the denylisted evil.test, DNS
    // mode, default allow), asked over DNS-over-TCP, and for A with the
    // DO bit and ANY over UDP: is evil.test's address served on any path?
    let w = cname_world();
    let p = &w.p;
    let pol = policy_file("escape-98", "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let _d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let control = dig_short(p, "allowed.test");
    assert!(control.contains(&p.v4(2)), "control: allowed.test answered: {control}");
    let mut found = Vec::new();
    for extra in [&["A", "+tcp"][..], &["A", "+dnssec"], &["ANY"], &["ANY", "+tcp"], &["CNAME", "+tcp"]] {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", &format!("@{}", p.v4(2)), "alias.test", "+short", "+time=2", "+tries=1"]).args(extra);
        let out = util::run(c).1;
        eprintln!("escape_98: alias.test {extra:?}: {}", out.trim());
        if out.contains(&p.v4(3)) {
            found.push(format!("alias.test {extra:?} served evil.test's {}: {}", p.v4(3), out.trim()));
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_99_allowed_query_floods_from_many_uids_inside_the_meter_do_not_starve_a_co_tenant() {
    // The round-7 question without filling the meter: 16 children, each
    // under its own uid (CAP_SETUID) and so its own kernel limit and its
    // own hardening client, each sending fresh allowed names as fast as
    // one socket does; a co-tenant's lookups meanwhile.
    let w = crate::run::world_with(|two, _| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.delay = Duration::from_millis(300);
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-99", "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", &upstream)]);
    // Where the attacker sits in a cgroup of its own (a container), its
    // uids are one client to egret; EGRET_IT_99_CGROUP=0 runs it without.
    let cg = Cgroups::mount("99", &["hog"]);
    let mut cmd = setpriv_args(Priv::Container);
    cmd.insert(0, "setpriv".into());
    cmd.extend([py3().to_owned(), util::public("netns/attack.py")]);
    cmd.extend(["dns-flood-uids", "127.0.0.1", "53", "allowed.test", "12", "500000", "16"].map(String::from));
    let sh = if std::env::var("EGRET_IT_99_CGROUP").as_deref() == Ok("0") {
        vec!["-c".to_owned(), cmd.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")]
    } else {
        cg.run_in("hog", &cmd)
    };
    let flood = Pair::spawn_ready(&p.work, "sh", &sh.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(2));
    let lost_before = dns_listener_drops(&p.work);
    let (answered, worst) = digs_as(p, Priv::Nobody);
    let lost = dns_listener_drops(&p.work) - lost_before;
    drop(flood);
    eprintln!(
        "escape_99: 16 uids flooding; the other client answered {answered}/4, slowest {worst:?}; \
         datagrams dropped at egret's full listener {lost}"
    );
    assert!(alive(d.child.id()), "egret died");
    assert_eq!(answered, 4, "a co-tenant lost lookups to a flood spread over 16 uids");
    assert!(worst < Duration::from_secs(2), "a co-tenant waited {worst:?}");
}

// ---------------------------------------------------------------------------
// Round 8: the chain judged wherever egret resolves.

/// `cname_world`'s zone plus `long.test`: sixteen CNAME links
/// (`l1.test` .. `l16.test`), then `evil.test`, at the upstream's .3.
fn long_chain_world() -> World {
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData};
    crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        let cname = |t: &str| RData::CNAME(CNAME(Name::from_ascii(format!("{t}.")).expect("name")));
        z.records.push(("evil.test".into(), 300, RData::A(A(three))));
        z.records.push(("alias.test".into(), 300, cname("evil.test")));
        let links: Vec<String> = (1..=16).map(|i| format!("l{i}.test")).collect();
        z.records.push(("long.test".into(), 300, cname(&links[0])));
        for pair in links.windows(2) {
            z.records.push((pair[0].clone(), 300, cname(&pair[1])));
        }
        z.records.push((links[15].clone(), 300, cname("evil.test")));
        z
    })
}

#[test]

fn escape_160_a_chain_longer_than_the_kept_links_hides_its_denylisted_end() {
    // HTTPS mode, `default_action: allow`, evil.test denylisted.
    // long.test leads through 16 other names to evil.test: one answer,
    // 17 CNAME targets. The resolver's cache keeps 16 links per name
    // (`MAX_LINKS`): is the 17th, the denylisted one, still judged when
    // a request for long.test is sent to evil.test's address?
    let w = long_chain_world();
    let p = &w.p;
    let pol = policy_file("escape-160", "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let to = s_addr(&p.v4(3), 80);
    // Controls: evil.test itself, and the one-link alias.test, are refused.
    http(&p.work, to, &get("evil.test")).assert_not_served("control: evil.test itself");
    http(&p.work, to, &get("alias.test")).assert_not_served("control: alias.test, one link to evil.test");
    // Control: a name not denylisted and not leading there is served.
    let o = http(&p.work, s_addr(&p.v4(2), 80), &get("allowed.test"));
    assert!(o.text().contains("hello from"), "control: allowed.test is not served: {o:?}");
    let o = http(&p.work, to, &get("long.test"));
    o.assert_not_served("long.test through 16 links to evil.test");
    let ev = wait_for(Duration::from_secs(10), || {
        d.events.try_iter().find(|e| e["http_host"] == "long.test" && e["action"] == "BLOCKED")
    })
    .expect("a BLOCKED event for long.test");
    assert_eq!(ev["reason"], "denylisted", "refused for the chain, not as a mismatch: {ev}");
}

#[test]
fn escape_161_a_reload_that_denylists_a_link_does_not_replay_a_named_port() {
    // `tcp/alias.test:7000` allowed (a name with ports), alias.test a
    // CNAME to evil.test at .3. Its answer opens .3 on TCP 7000. A reload
    // then denylists evil.test: a fresh lookup would not open it (the
    // refresher and the DNS server skip such answers), but does the
    // replay of what the old answer opened put it back?
    let mut found = Vec::new();
    for mode in ["https", "dns-strict"] {
        let w = cname_world();
        let p = &w.p;
        let allow = "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\"]\n";
        let pol = policy_file(&format!("escape-161-{mode}"), allow);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", mode), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "7000", "");
        let to = s_addr(&p.v4(3), 7000);
        if mode == "https" {
            d.wait_logged("alias.test: 1 address(es) open on its ports", Duration::from_secs(10));
        } else {
            let answer = dig_short(p, "alias.test");
            assert!(answer.contains(&p.v4(3)), "{mode}: control: alias.test is not answered: {answer}");
        }
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        assert!(o.text().contains("echo:"), "{mode}: control: the named port is not open: {o:?}");
        std::fs::write(&pol, format!("{allow}denylist:\n  domains: [\"evil.test\"]\n"))
            .expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        if o.text().contains("echo:") {
            found.push(format!("{mode}: .3:7000 came back under alias.test through denylisted evil.test"));
        }
        drop(d);
        // Control: started with the new policy, the same answer opens nothing.
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", mode), ("DNS_UPSTREAMS", upstream.as_str())]);
        if mode == "https" {
            d.wait_logged("not opened, its answer leads through denylisted", Duration::from_secs(10));
        } else {
            let answer = dig_short(p, "alias.test");
            assert!(!answer.contains(&p.v4(3)), "{mode}: control: served through evil.test: {answer}");
        }
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        assert!(!o.text().contains("echo:"), "{mode}: control: a fresh start opened it: {o:?}");
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]

fn escape_162_a_reload_that_denylists_the_seventeenth_link_does_not_replay_its_address() {
    // escape_151 with long.test: 16 CNAME links, then evil.test. Served
    // and learned while nothing is denylisted; a reload then denylists
    // evil.test. The learned replay judges the recorded chain: is the
    // 17th link in it?
    let w = long_chain_world();
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let pol = policy_file("escape-162", allow);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    let answer = dig_short(p, "long.test");
    assert!(answer.contains(&p.v4(3)), "control: long.test is not answered: {answer}");
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(o.text().contains("echo:"), "control: the learned address is not open: {o:?}");
    std::fs::write(&pol, format!("{allow}denylist:\n  domains: [\"evil.test\"]\n")).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    // Control: asked now, the answer is refused (the DNS server judges the whole chain).
    let again = dig_short(p, "long.test");
    assert!(
        !again.contains(&p.v4(3)),
        "control: long.test served through evil.test after the reload: {again}"
    );
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(!o.text().contains("echo:"), "evil.test's address came back under long.test: {o:?}");
}

#[test]
fn escape_163_a_link_in_upper_case_with_its_dot_is_the_denylisted_name() {
    // HTTPS mode, default allow, evil.test denylisted: upper.test is a
    // CNAME to `EVIL.TEST.` as the upstream spells it. A request for
    // upper.test sent to evil.test's address: the link must read as the
    // policy's name.
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData};
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("evil.test".into(), 300, RData::A(A(three))));
        let target = Name::from_ascii("EVIL.TEST.").expect("name");
        z.records.push(("upper.test".into(), 300, RData::CNAME(CNAME(target))));
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-163", "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let to = s_addr(&p.v4(3), 80);
    for host in ["upper.test", "UPPER.TEST.", "Upper.Test"] {
        let o = http(&p.work, to, &get(host));
        o.assert_not_served(&format!("{host} through EVIL.TEST."));
    }
    let ev = wait_for(Duration::from_secs(10), || {
        d.events.try_iter().find(|e| e["action"] == "BLOCKED" && e["reason"] == "denylisted")
    })
    .expect("a denylisted BLOCKED event");
    assert!(ev["note"].as_str().is_some_and(|n| n.contains("evil.test")), "the note names the link: {ev}");
}

#[test]
fn escape_170_the_answer_that_triggers_the_learned_prune_keeps_its_chain() {
    // Round 9: strict DNS mode prunes its learned addresses on every
    // 256th answer. When the prune ran after the answer's chain was
    // recorded but before its address, it forgot that chain (the name had
    // no address yet), and a reload denylisting the link replayed the
    // address. 300 first answers, each a different CNAME to evil.test,
    // so whichever of them is the 256th learned answer is one of these.
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData};
    const ALIASES: usize = 300;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("evil.test".into(), 300, RData::A(A(three))));
        for i in 0..ALIASES {
            let target = Name::from_ascii("evil.test.").expect("name");
            z.records.push((format!("a{i}.test"), 300, RData::CNAME(CNAME(target))));
        }
        z
    });
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let pol = policy_file("escape-170", allow);
    let upstream = format!("{}:53", p.v4(2));
    // The hardening's per-zone budget would refuse 300 new names a minute.
    let env =
        [("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_HARDENING", "false")];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    let batch = std::env::temp_dir().join(format!("egret-escape-170-{}.txt", std::process::id()));
    let lines: String = (0..ALIASES).map(|i| format!("a{i}.test A\n")).collect();
    std::fs::write(&batch, lines).expect("write the dig batch");
    let mut c = as_workload(&p.work, Priv::Nobody);
    let server = format!("@{}", p.v4(2));
    c.args(["dig", server.as_str(), "+short", "+time=2", "+tries=1", "-f"]).arg(&batch);
    let (_, out, _) = util::run(c);
    let _ = std::fs::remove_file(&batch);
    let served = out.lines().filter(|l| *l == p.v4(3)).count();
    assert_eq!(served, ALIASES, "control: every alias is answered with evil.test's address: {out}");
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(o.text().contains("echo:"), "control: the learned address is not open: {o:?}");
    std::fs::write(&pol, format!("{allow}denylist:\n  domains: [\"evil.test\"]\n")).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(!o.text().contains("echo:"), "evil.test's address came back under an alias: {o:?}");
}

// ---------------------------------------------------------------------------
// Round 10: CNAME/DNAME chains, denylisted links, and what a reload replays.

/// A name from raw label bytes (any byte the wire allows), fully qualified.
fn raw_name(labels: &[&[u8]]) -> hickory_proto::rr::Name {
    let mut n = hickory_proto::rr::Name::from_labels(labels.iter().map(|l| l.to_vec())).expect("raw name");
    n.set_fqdn(true);
    n
}

/// The key `dnsauth` files a name under (as it follows a chain).
fn auth_key(n: &hickory_proto::rr::Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// CNAME targets under `evil.test` whose first label the policy's name
/// syntax refuses (a byte outside letters/digits/`-`/`_`, a hyphen at
/// the edge, a literal `*`), with the alias in `*.test` leading to each;
/// and the control `ok.test` → `x.evil.test`, a valid name there.
const ODD_LINKS: [(&str, &[u8]); 5] = [
    ("bang.test", b"x!"),
    ("star.test", b"*"),
    ("dash.test", b"-x"),
    ("space.test", b"x y"),
    ("nul.test", b"x\x00"),
];

fn odd_link_world() -> World {
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::RData;
    crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        let mut add = |alias: &str, first: &[u8]| {
            let target = raw_name(&[first, b"evil", b"test"]);
            z.records.push((auth_key(&target), 300, RData::A(A(three))));
            z.records.push((alias.to_owned(), 300, RData::CNAME(CNAME(target))));
        };
        add("ok.test", b"x");
        for (alias, first) in ODD_LINKS {
            add(alias, first);
        }
        z
    })
}

#[test]
fn escape_171_a_link_under_a_denylisted_zone_in_a_label_the_policy_cannot_read() {
    // `evil.test` and `*.evil.test` denylisted. `ok.test` CNAME
    // `x.evil.test` is refused (the control). The other aliases lead to
    // names in the same subtree whose first label is not a host name
    // label (`x!`, `*`, `-x`, `x y`, `x\0`): names the DNS carries and a
    // resolver follows (a wildcard under evil.test answers them all).
    // `denied_in` asks `policy.decide` of each link, and a name that does
    // not normalise decides as `invalid-name`, not `denylisted`: is the
    // link then judged clean, and evil.test's address served (dns,
    // https), learned (dns-strict) or replayed after a reload?
    let deny = "denylist:\n  domains: [\"evil.test\", \"*.evil.test\"]\n";
    let mut found = Vec::new();
    for mode in ["dns", "dns-strict", "https"] {
        let w = odd_link_world();
        let p = &w.p;
        let yaml = match mode {
            "dns-strict" => format!("default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n{deny}"),
            _ => format!("default_action: allow\n{deny}"),
        };
        let pol = policy_file(&format!("escape-171-{mode}"), &yaml);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", mode), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "7000", "");
        let evil = p.v4(3);
        if mode == "https" {
            let to = s_addr(&evil, 80);
            http(&p.work, to, &get("evil.test")).assert_not_served("https: control: evil.test itself");
            http(&p.work, to, &get("ok.test")).assert_not_served("https: control: ok.test via x.evil.test");
            let o = http(&p.work, s_addr(&p.v4(2), 80), &get("allowed.test"));
            assert!(o.text().contains("hello from"), "https: control: allowed.test is not served: {o:?}");
            for (alias, first) in ODD_LINKS {
                let o = http(&p.work, to, &get(alias));
                if o.text().contains("hello from") {
                    found.push(format!(
                        "https: {alias} (via {:?}.evil.test) served from {evil}",
                        util::text(first)
                    ));
                }
            }
        } else {
            assert!(
                !dig_short(p, "evil.test").contains(&evil),
                "{mode}: control: evil.test itself was served"
            );
            let ok = dig_short(p, "ok.test");
            assert!(!ok.contains(&evil), "{mode}: control: ok.test via x.evil.test was served: {ok}");
            let to = s_addr(&evil, 7000);
            if mode == "dns-strict" {
                let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
                assert!(
                    !o.text().contains("echo:"),
                    "{mode}: control: {evil}:7000 open before any alias: {o:?}"
                );
            }
            for (alias, first) in ODD_LINKS {
                let a = dig_short(p, alias);
                if a.contains(&evil) {
                    found.push(format!(
                        "{mode}: {alias} served {evil} via {:?}.evil.test: {}",
                        util::text(first),
                        a.trim().replace('\n', " ")
                    ));
                }
            }
            if mode == "dns-strict" {
                let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
                if o.text().contains("echo:") {
                    found.push(format!(
                        "{mode}: evil.test's {evil}:7000 opened (learned through the odd links)"
                    ));
                }
            }
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_172_a_reload_replays_an_address_learned_through_an_unreadable_link() {
    // Strict DNS mode, `*.test` allowed, nothing denylisted yet. An alias
    // is answered (evil.test's address learned under it); a reload then
    // denylists `evil.test` and `*.evil.test`. The control leads through
    // `x.evil.test` (escape_151's case: not replayed); the attack through
    // `x!.evil.test`, which `denied_in` cannot decide as denylisted.
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let deny = "denylist:\n  domains: [\"evil.test\", \"*.evil.test\"]\n";
    let mut found = Vec::new();
    for alias in ["ok.test", "bang.test"] {
        let w = odd_link_world();
        let p = &w.p;
        let pol = policy_file(&format!("escape-172-{alias}"), allow);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000", "");
        let to = s_addr(&p.v4(3), 7000);
        let answer = dig_short(p, alias);
        assert!(answer.contains(&p.v4(3)), "control: {alias} is not answered: {answer}");
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        assert!(o.text().contains("echo:"), "control: {alias}: the learned address is not open: {o:?}");
        std::fs::write(&pol, format!("{allow}{deny}")).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        let open = o.text().contains("echo:");
        if alias == "ok.test" {
            assert!(!open, "control: x.evil.test's address came back under ok.test: {o:?}");
        } else if open {
            found.push(format!("{alias}: {}:7000 replayed after the reload denylisted *.evil.test", p.v4(3)));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_173_a_reload_during_a_slow_refresh_of_a_name_with_ports() {
    // HTTPS mode, `tcp/alias.test:7000` allowed, alias.test a CNAME to
    // evil.test at .3. The upstream is slow (1.5 s an answer, so a
    // refresh, A then AAAA, takes 3 s) and the answer's TTL short (5 s,
    // `DNS_TTL_MIN=5s`): the refresher asks again every ~5 s. A reload
    // denylisting evil.test is timed to land inside one refresh. The
    // refresher judged that refresh's chain by the policy it read when it
    // started: does it open .3:7000 in the new ruleset, after the replay
    // that (rightly) left it out?
    let w = cname_world_with(5, Duration::from_millis(1500));
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\"]\n";
    let pol = policy_file("escape-173", allow);
    let upstream = format!("{}:53", p.v4(2));
    let env = [("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_TTL_MIN", "5s")];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    d.wait_log("alias.test: 1 address(es) open on its ports", Duration::from_secs(20));
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(o.text().contains("echo:"), "control: the named port is not open: {o:?}");
    // The next refresh: due 5 s after that line, started within the
    // refresher's 500 ms tick, 3 s long. The file watcher polls every
    // 500 ms: written at +5.8 s, the reload lands in [+5.8, +6.3] s.
    let seen = d.wait_log("alias.test: 1 address(es) open on its ports", Duration::from_secs(20));
    let at = Instant::now();
    eprintln!("refresh seen: {seen}");
    std::thread::sleep(Duration::from_millis(5800).saturating_sub(at.elapsed()));
    std::fs::write(&pol, format!("{allow}denylist:\n  domains: [\"evil.test\"]\n")).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let reloaded = at.elapsed();
    d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    // What the refresher says next: the refresh in flight.
    let next = d.wait_log("alias.test: ", Duration::from_secs(15));
    let after = at.elapsed();
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    let open = o.text().contains("echo:");
    eprintln!("reloaded at +{reloaded:?}; next refresher line at +{after:?}: {next}; open: {open}");
    // Control: the refresh after that one judges by the new policy.
    let later = d.wait_log("alias.test: ", Duration::from_secs(15));
    assert!(later.contains("not opened"), "control: a refresh under the new policy opened it: {later}");
    assert!(
        !open,
        "{}:7000 opened after the reload that denylisted evil.test (refresher: {next:?})",
        p.v4(3)
    );
}

/// Workload processes (uid 65534) asking `name` A through egret's
/// resolver `count` times each, as fast as answers come back; killed by
/// pid when dropped.
struct DigFlood(Vec<std::process::Child>, std::path::PathBuf);

/// Round 10's reload race: up to `rounds` times, `procs` workload
/// processes ask `asked` (up to `count` queries each) while the policy
/// file goes from `allow` to `narrowed`, and back between rounds. The
/// round after which evil.test's .3:7000 is open, if any.
fn reload_race(
    p: &Pair,
    d: &Daemon,
    pol: &std::path::Path,
    (allow, narrowed): (&str, &str),
    (asked, procs, count): (&str, usize, usize),
    rounds: usize,
) -> Option<usize> {
    let to = s_addr(&p.v4(3), 7000);
    let open =
        || tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT).text().contains("echo:");
    assert!(dig_short(p, asked).contains(&p.v4(3)), "control: {asked} is not answered");
    assert!(open(), "control: {asked}'s address is not open");
    let tag = pol.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
    let tag = format!("race-{}", tag.unwrap_or_default());
    for round in 0..rounds {
        let flood = DigFlood::start(p, asked, procs, count, &tag);
        std::thread::sleep(Duration::from_millis(700));
        std::fs::write(pol, narrowed).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
        drop(flood);
        let refused = dig_short(p, asked);
        assert!(!refused.contains(&p.v4(3)), "control: {asked} served after the reload: {refused}");
        if open() {
            return Some(round);
        }
        std::fs::write(pol, allow).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
    }
    None
}

impl DigFlood {
    fn start(p: &Pair, name: &str, procs: usize, count: usize, tag: &str) -> DigFlood {
        let batch = std::env::temp_dir().join(format!("egret-{tag}-{}.txt", std::process::id()));
        let lines: String = (0..count).map(|_| format!("{name} A\n")).collect();
        std::fs::write(&batch, lines).expect("write the dig batch");
        let server = format!("@{}", p.v4(2));
        let kids = (0..procs)
            .map(|_| {
                let mut c = as_workload(&p.work, Priv::Nobody);
                c.args(["dig", server.as_str(), "+short", "+time=1", "+tries=1", "-f"]).arg(&batch);
                c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                c.spawn().expect("spawn dig")
            })
            .collect();
        DigFlood(kids, batch)
    }
}

impl Drop for DigFlood {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = std::fs::remove_file(&self.1);
    }
}

#[test]
fn escape_174_answers_in_flight_while_a_reload_swaps_the_policy_are_learned_into_the_new_ruleset() {
    // Strict DNS mode, `*.test` allowed, alias.test a CNAME to evil.test
    // at .3. The workload keeps asking alias.test while a reload
    // denylists evil.test. The reloader applies the new ruleset (learned
    // sets empty), replays what the new policy allows, and only then
    // swaps the policy handle: an answer delivered in between is judged
    // by the old policy (its chain clean) and learned into the new
    // ruleset. Up to five reload pairs (off, then on again), each checked
    // once the flood is answered NXDOMAIN.
    let w = cname_world();
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let deny = format!("{allow}denylist:\n  domains: [\"evil.test\"]\n");
    let pol = policy_file("escape-174", allow);
    let upstream = format!("{}:53", p.v4(2));
    // The flood outruns the hardening's per-client rate (50 q/s).
    let env =
        [("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_HARDENING", "false")];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000", "");
    let leaked = reload_race(p, &d, &pol, (allow, &deny), ("alias.test", 3, 20_000), 5);
    let served = d.events.try_iter().filter(|e| e["qname"] == "alias.test").count();
    eprintln!("alias.test events: {served}");
    assert!(leaked.is_none(), "{}:7000 open after reload {leaked:?} denylisted evil.test", p.v4(3));
}

#[test]
fn escape_175_the_in_flight_reload_window_with_the_hardening_on_and_for_a_revoked_name() {
    // escape_174 under the defaults an operator runs with: the hardening
    // on (50 q/s a client), one unprivileged workload process. Two
    // reloads: one that denylists alias.test's link (evil.test), one that
    // revokes evil.test itself (asked directly: no chain at all; the
    // allowlist shrinks from `*.test` to `allowed.test`). After each, is
    // evil.test's .3:7000 open though nothing the new policy allows leads
    // there? Up to eight reload pairs each.
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let mut found = Vec::new();
    for (case, asked, narrowed) in [
        ("link", "alias.test", format!("{allow}denylist:\n  domains: [\"evil.test\"]\n")),
        (
            "revoked",
            "evil.test",
            "default_action: deny\nallowlist:\n  domains: [\"allowed.test\"]\n".to_owned(),
        ),
    ] {
        let w = cname_world();
        let p = &w.p;
        let pol = policy_file(&format!("escape-175-{case}"), allow);
        let upstream = format!("{}:53", p.v4(2));
        let env = [("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())];
        let d = Daemon::start(&p.work, &pol, &env);
        let _echo = forbidden_echo(p, "7000", "");
        if let Some(round) = reload_race(p, &d, &pol, (allow, &narrowed), (asked, 1, 5_000), 8) {
            found.push(format!("{case}: {}:7000 open after reload {round} (asking {asked})", p.v4(3)));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

/// Records for [`crate::dnsauth::Zone::raw`].
mod rr {
    use hickory_proto::rr::rdata::{A, CNAME, NULL};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

    pub fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    pub fn cname(from: &str, to: &str) -> Record {
        Record::from_rdata(name(from), 300, RData::CNAME(CNAME(name(to))))
    }

    pub fn a(owner: &str, ip: std::net::Ipv4Addr) -> Record {
        Record::from_rdata(name(owner), 300, RData::A(A(ip)))
    }

    /// A DNAME whose RDATA is `wire` as it is.
    pub fn dname_wire(from: &str, wire: Vec<u8>) -> Record {
        Record::from_rdata(
            name(from),
            300,
            RData::Unknown { code: RecordType::DNAME, rdata: NULL::with(wire) },
        )
    }

    pub fn dname(from: &str, to: &str) -> Record {
        let mut wire = Vec::new();
        name(to).emit(&mut BinEncoder::new(&mut wire)).expect("emit");
        dname_wire(from, wire)
    }
}

#[test]
fn escape_176_dname_answers_into_a_denylisted_zone() {
    // DNS mode, default allow. `dn.test` DNAME `evil.test` (RFC 6672: the
    // whole subtree, `www.dn.test` → `www.evil.test`), answers built as
    // records: (a) DNAME with the synthesised CNAME, (b) the DNAME alone,
    // (c) a DNAME whose target egret cannot read (a compression pointer in
    // its RDATA) beside the synthesised CNAME, all under a denylist of
    // `evil.test` and `*.evil.test`; (e) the DNAME alone under a denylist
    // of `*.evil.test` only (the subtree's hosts, not the apex): the name
    // the DNAME leads to is `e.evil.test`, but the chain egret judges holds
    // only the DNAME's target, the apex. Is evil.test's address served?
    use hickory_proto::rr::RecordType;
    let raw = |three| {
        let evil_a = |q: &str| rr::a(&format!("{q}.evil.test."), three);
        vec![
            (
                "a.dn.test",
                vec![
                    rr::dname("dn.test.", "evil.test."),
                    rr::cname("a.dn.test.", "a.evil.test."),
                    evil_a("a"),
                ],
            ),
            ("b.dn.test", vec![rr::dname("dn.test.", "evil.test."), evil_a("b")]),
            (
                "c.dn.test",
                vec![
                    rr::dname_wire("dn.test.", vec![0xc0, 0x0c]),
                    rr::cname("c.dn.test.", "c.evil.test."),
                    evil_a("c"),
                ],
            ),
            ("e.dn.test", vec![rr::dname("dn.test.", "evil.test."), evil_a("e")]),
            (
                "ok.dn.test",
                vec![
                    rr::dname("dn.test.", "cdn.test."),
                    rr::cname("ok.dn.test.", "ok.cdn.test."),
                    rr::a("ok.cdn.test.", three),
                ],
            ),
        ]
    };
    let mut found = Vec::new();
    for (deny, cases) in [
        ("[\"evil.test\", \"*.evil.test\"]", &["a.dn.test", "b.dn.test", "c.dn.test"][..]),
        ("[\"*.evil.test\"]", &["e.dn.test"][..]),
    ] {
        let w = crate::run::world_with(|two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            for (q, recs) in raw(three) {
                z.raw.push((q.to_owned(), RecordType::A, vec![recs]));
            }
            z
        });
        let p = &w.p;
        let pol =
            policy_file("escape-176", &format!("default_action: allow\ndenylist:\n  domains: {deny}\n"));
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", upstream.as_str())]);
        let ok = dig_short(p, "ok.dn.test");
        assert!(ok.contains(&p.v4(3)), "control: ok.dn.test (DNAME to cdn.test) is not answered: {ok}");
        for q in cases {
            let got = dig_short(p, q);
            if got.contains(&p.v4(3)) {
                found.push(format!(
                    "denylist {deny}: {q} served {}: {}",
                    p.v4(3),
                    got.trim().replace('\n', " ")
                ));
            }
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_177_a_chain_that_changes_between_lookups_then_a_reload() {
    // Strict DNS mode, `*.test` allowed. rot1.test is answered first
    // through cdn.test, then through evil.test, then through cdn.test
    // again; rot2.test first through evil.test, then clean. Both end at
    // .3. A reload then denylists evil.test: does the clean answer that
    // came last wash out the one through evil.test?
    use hickory_proto::rr::RecordType;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        let via = |q: &str, link: &str| {
            vec![rr::cname(&format!("{q}."), &format!("{link}.")), rr::a(&format!("{link}."), three)]
        };
        z.raw.push((
            "rot1.test".into(),
            RecordType::A,
            vec![via("rot1.test", "cdn.test"), via("rot1.test", "evil.test"), via("rot1.test", "cdn.test")],
        ));
        z.raw.push((
            "rot2.test".into(),
            RecordType::A,
            vec![via("rot2.test", "evil.test"), via("rot2.test", "cdn.test")],
        ));
        z
    });
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let pol = policy_file("escape-177", allow);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    for (q, n) in [("rot1.test", 3), ("rot2.test", 2)] {
        for i in 0..n {
            let got = dig_short(p, q);
            assert!(got.contains(&p.v4(3)), "control: {q} answer {i}: {got}");
        }
    }
    assert_eq!(
        w.dns.count("rot1.test", "udp") + w.dns.count("rot2.test", "udp"),
        5,
        "control: every lookup went upstream"
    );
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(o.text().contains("echo:"), "control: the learned address is not open: {o:?}");
    std::fs::write(&pol, format!("{allow}denylist:\n  domains: [\"evil.test\"]\n")).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(
        !o.text().contains("echo:"),
        "{}:7000 came back after a reload denylisting a link of an earlier answer: {o:?}",
        p.v4(3)
    );
}

/// A TLS-looking connection held open from inside `ns`: a ClientHello
/// naming `sni`, then "a\n"; on `go`, "b\n". Sends `true` on `ready`
/// once "a" came back echoed; returns whether "b" did (within 3 s).
fn held_tls(
    ns: &str,
    to: SocketAddr,
    sni: &'static str,
    ready: std::sync::mpsc::Sender<bool>,
    go: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<(bool, String)> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let read_until = |s: &mut TcpStream, want: &[u8], got: &mut Vec<u8>| {
                let start = Instant::now();
                let mut buf = [0u8; 4096];
                while start.elapsed() < Duration::from_secs(3) {
                    if got.windows(want.len()).any(|w| w == want) {
                        return true;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                        Err(_) => return false,
                    }
                }
                got.windows(want.len()).any(|w| w == want)
            };
            let Ok(mut s) = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT) else {
                let _ = ready.send(false);
                return (false, "connect failed".to_owned());
            };
            s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let mut first = hello(Some(sni.as_bytes()), 0);
            first.extend_from_slice(b"\na\n");
            let mut got = Vec::new();
            let up = s.write_all(&first).is_ok() && read_until(&mut s, b"echo:a\n", &mut got);
            let _ = ready.send(up);
            if !up || go.recv_timeout(Duration::from_secs(30)).is_err() {
                return (false, "not relayed before the reload".to_owned());
            }
            let mut after = Vec::new();
            let b = s.write_all(b"b\n").is_ok() && read_until(&mut s, b"echo:b\n", &mut after);
            (b, util::text(&after))
        })
    })
}

#[test]
fn escape_178_an_open_connection_through_a_link_a_reload_denylists() {
    // HTTPS mode, default allow. A TLS connection names alias.test (a
    // CNAME to evil.test) and goes to evil.test's .3:443: allowed (not
    // denylisted, resolves there through the chain) and relayed. A reload
    // then denylists evil.test: new connections for alias.test are
    // refused (the check judges the cached chain), and the reload cuts the
    // open connections the new policy no longer allows. It judges a
    // connection by its name and address: is the one that reached evil.test
    // through the chain cut, as one that named evil.test is?
    let w = cname_world();
    let p = &w.p;
    let pol = policy_file("escape-178", "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "443", "");
    let to = s_addr(&p.v4(3), 443);
    let mut held = Vec::new();
    for sni in ["alias.test", "evil.test"] {
        let (rtx, rrx) = std::sync::mpsc::channel();
        let (gtx, grx) = std::sync::mpsc::channel();
        let h = held_tls(&p.work, to, sni, rtx, grx);
        assert_eq!(
            rrx.recv_timeout(Duration::from_secs(10)),
            Ok(true),
            "control: {sni} to .3:443 is not relayed"
        );
        held.push((sni, gtx, h));
    }
    std::fs::write(&pol, "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n").expect("rewrite");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    // Control: a new connection naming alias.test is refused now.
    let mut fresh = hello(Some(b"alias.test"), 0);
    fresh.extend_from_slice(b"\nc\n");
    let o = tcp(&p.work, to, vec![fresh], Duration::ZERO, CLIENT_TIMEOUT);
    o.assert_not_served("control: a new alias.test connection after the reload");
    let mut kept = Vec::new();
    for (sni, go, h) in held {
        let _ = go.send(());
        let (b, text) = h.join().expect("held connection");
        kept.push((sni, b, text));
    }
    eprintln!("after the reload: {kept:?}");
    let evil = kept.iter().find(|k| k.0 == "evil.test").expect("evil");
    assert!(!evil.1, "control: the connection naming evil.test was not cut: {:?}", evil.2);
    let alias = kept.iter().find(|k| k.0 == "alias.test").expect("alias");
    assert!(
        !alias.1,
        "the connection to evil.test's .3:443 through alias.test kept flowing after the reload: {:?}",
        alias.2
    );
}

#[test]
fn escape_179_an_https_record_whose_target_name_is_in_a_denylisted_zone() {
    // Strict DNS mode, `*.test` allowed, `evil.test` and `*.evil.test`
    // denylisted. `svc.test HTTPS 1 x.evil.test. ipv4hint=<.3>`: the
    // service's endpoint is x.evil.test (RFC 9460 §2.4.2: the TargetName),
    // and the hint is its address; egret learns hints as addresses
    // (`filter::https_record_hints_are_addresses`) but its chain holds
    // CNAME/DNAME targets only.
    // The control reaches the same record through a CNAME to x.evil.test.
    use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey, SvcParamValue, SVCB};
    use hickory_proto::rr::rdata::{A, HTTPS};
    use hickory_proto::rr::{RData, Record, RecordType};
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        let svcb = |owner: &str| {
            let v = SVCB::new(
                1,
                rr::name("x.evil.test."),
                vec![(SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(vec![A(three)])))],
            );
            Record::from_rdata(rr::name(owner), 300, RData::HTTPS(HTTPS(v)))
        };
        z.raw.push(("svc.test".into(), RecordType::HTTPS, vec![vec![svcb("svc.test.")]]));
        z.raw.push((
            "cn.test".into(),
            RecordType::HTTPS,
            vec![vec![rr::cname("cn.test.", "x.evil.test."), svcb("x.evil.test.")]],
        ));
        z
    });
    let p = &w.p;
    let pol = policy_file(
        "escape-179",
        "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\ndenylist:\n  domains: [\"evil.test\", \"*.evil.test\"]\n",
    );
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    let https = |name: &str| {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", &format!("@{}", p.v4(2)), name, "HTTPS", "+short", "+time=2", "+tries=1"]);
        util::run(c).1
    };
    let cn = https("cn.test");
    assert!(!cn.contains(&p.v4(3)), "control: cn.test through the CNAME to x.evil.test was served: {cn}");
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(!o.text().contains("echo:"), "control: .3:7000 open before svc.test: {o:?}");
    let svc = https("svc.test");
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    let mut found = Vec::new();
    if svc.contains(&p.v4(3)) {
        found.push(format!("svc.test served its x.evil.test endpoint's hint: {}", svc.trim()));
    }
    if o.text().contains("echo:") {
        found.push(format!("{}:7000 opened by the hint of an endpoint in the denylisted zone", p.v4(3)));
    }
    drop(d);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_180_a_reload_that_gives_a_link_ports_replays_the_alias_on_every_port() {
    // Strict DNS mode, allowlist `alias.test` (a CNAME to evil.test at
    // .3): the answer opens .3 on every port. A reload adds
    // `tcp/evil.test:7001`: from then on an answer that leads through
    // evil.test opens .3 on TCP 7001 only (escape_90). Does the replay of
    // the learned addresses put .3 back on every port?
    let w = cname_world();
    let p = &w.p;
    let before = "allowlist:\n  domains: [\"alias.test\"]\n";
    let after = "allowlist:\n  domains: [\"alias.test\", \"tcp/evil.test:7001\"]\n";
    let pol = policy_file("escape-180", before);
    let upstream = format!("{}:53", p.v4(2));
    let env = [("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000,7001", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: alias.test is not answered");
    assert!(on(7000), "control: alias.test's answer did not open .3:7000 under the first policy");
    std::fs::write(&pol, after).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let replayed = on(7000);
    drop(d);
    // Control: started with the second policy, the same answer opens 7001 only.
    let d = Daemon::start(&p.work, &pol, &env);
    assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: alias.test is not answered");
    assert!(!on(7000) && on(7001), "control: a fresh answer under the second policy is not limited to 7001");
    drop(d);
    assert!(!replayed, "{}:7000 replayed after the reload limited evil.test to TCP 7001", p.v4(3));
}

/// `cname_world`'s zone plus `db.test` at the upstream's .3 (the
/// address evil.test has).
fn shared_world() -> World {
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData};
    crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("evil.test".into(), 300, RData::A(A(three))));
        z.records.push(("db.test".into(), 300, RData::A(A(three))));
        z.records.push((
            "alias.test".into(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("evil.test.").expect("name"))),
        ));
        z
    })
}

#[test]
fn escape_181_a_shared_address_and_a_reload_that_adds_ports_and_denylists_the_link() {
    // Strict DNS mode. (a) One address, .3, answered for db.test (a name
    // with ports, `tcp/db.test:7001`) and for alias.test (allowed, a CNAME
    // to evil.test). A reload denylists evil.test: db.test deserves
    // .3:7001 still; does anything more come back (.3:7000)? (b) alias.test
    // allowed outright, answered through evil.test; a reload turns it into
    // `tcp/alias.test:7000` and denylists evil.test in the same edit: is
    // .3:7000 replayed as the new entry's port?
    let upstream_of = |p: &Pair| format!("{}:53", p.v4(2));
    let mut found = Vec::new();
    /// (what, policy before, policy after, names asked, ports that must stay open, port that must not).
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], &'a [u16], u16);
    let cases: [Case; 2] = [
        (
            "shared",
            "allowlist:\n  domains: [\"alias.test\", \"tcp/db.test:7001\"]\n",
            "default_action: deny\nallowlist:\n  domains: [\"alias.test\", \"tcp/db.test:7001\"]\ndenylist:\n  domains: [\"evil.test\"]\n",
            &["db.test", "alias.test"],
            &[7001],
            7000,
        ),
        (
            "ports-added",
            "allowlist:\n  domains: [\"alias.test\"]\n",
            "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\"]\ndenylist:\n  domains: [\"evil.test\"]\n",
            &["alias.test"],
            &[],
            7000,
        ),
    ];
    for (case, before, after, asked, kept, shut) in cases {
        let w = shared_world();
        let p = &w.p;
        let pol = policy_file(&format!("escape-181-{case}"), before);
        let upstream = upstream_of(p);
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        for q in asked {
            assert!(dig_short(p, q).contains(&p.v4(3)), "{case}: control: {q} is not answered");
        }
        assert!(on(shut), "{case}: control: .3:{shut} is not open before the reload");
        std::fs::write(&pol, after).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        for port in kept {
            assert!(on(*port), "{case}: control: .3:{port}, which the new policy still gives, is closed");
        }
        if on(shut) {
            found.push(format!("{case}: .3:{shut} open after the reload"));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_182_https_mode_with_its_dns_listener_names_with_ports_and_a_reload() {
    // HTTPS mode with `DNS_IN_HTTPS_MODE=true`: the workload asks egret's
    // listener for alias.test (a name with ports, `tcp/alias.test:7000`,
    // a CNAME to evil.test) and the refresher resolves it too. A reload
    // denylists evil.test and adds `tcp/db.test:7001` (db.test at the same
    // .3). Is .3:7000 back (through the listener's answer, the refresher's
    // replay, or db.test's new entry)? And is the listener's next answer
    // for alias.test refused?
    let w = shared_world();
    let p = &w.p;
    let before = "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\"]\n";
    let after = "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\", \"tcp/db.test:7001\"]\ndenylist:\n  domains: [\"evil.test\"]\n";
    let pol = policy_file("escape-182", before);
    let upstream = format!("{}:53", p.v4(2));
    let env = [("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_IN_HTTPS_MODE", "true")];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000,7001", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    d.wait_logged("alias.test: 1 address(es) open on its ports", Duration::from_secs(10));
    let a = dig_short(p, "alias.test");
    assert!(a.contains(&p.v4(3)), "control: the listener does not answer alias.test: {a}");
    assert!(on(7000), "control: .3:7000 is not open");
    std::fs::write(&pol, after).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    d.wait_logged("db.test: 1 address(es) open on its ports", Duration::from_secs(10));
    assert!(on(7001), "control: db.test's new port is not open");
    let mut found = Vec::new();
    let again = dig_short(p, "alias.test");
    if again.contains(&p.v4(3)) {
        found.push(format!("the listener served alias.test through evil.test after the reload: {again}"));
    }
    if on(7000) {
        found.push(".3:7000 open after the reload".to_owned());
    }
    drop(d);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_183_a_reload_during_a_slow_check_lookup_through_the_link_it_denylists() {
    // HTTPS mode, default allow, alias.test a CNAME to evil.test, the
    // upstream slow (1.5 s an answer: a check's A and AAAA take 3 s). A
    // request for alias.test to evil.test's .3:80 starts its check under
    // the old policy; a reload denylisting evil.test lands during the
    // lookup. The check judges the chain by the policy the connection
    // started with, and the re-check after registering (there to close
    // this window) asks the new policy about the name and address only:
    // is the request served?
    let w = cname_world_with(300, Duration::from_millis(1500));
    let p = &w.p;
    let pol = policy_file("escape-183", "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let to = s_addr(&p.v4(3), 80);
    // Control: the same request for another alias-free name is served
    // after its slow check (the delay alone refuses nothing).
    let o = http(&p.work, s_addr(&p.v4(2), 80), &get("allowed.test"));
    assert!(
        o.text().contains("hello from"),
        "control: allowed.test is not served with the slow upstream: {o:?}"
    );
    let writer = {
        let pol = pol.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&pol, "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n")
                .expect("rewrite");
        })
    };
    let started = Instant::now();
    let o = tcp(&p.work, to, vec![get("alias.test").into_bytes()], Duration::ZERO, Duration::from_secs(8));
    let took = started.elapsed();
    writer.join().expect("writer");
    let reload = d.wait_logged("policy reloaded", Duration::from_secs(10));
    eprintln!("answered after {took:?}; {reload}");
    // Control: a request after the reload is refused (the cached chain is
    // judged by the new policy).
    http(&p.work, to, &get("alias.test")).assert_not_served("control: alias.test after the reload");
    o.assert_not_served(
        "alias.test to evil.test's .3:80, checked across the reload that denylisted evil.test",
    );
}

#[test]
fn escape_184_idn_and_escaped_forms_of_a_denylisted_link() {
    // HTTPS mode and DNS mode, default allow, the denylist written in
    // Unicode: `évil.test` (its A-label `xn--vil-9la.test`). Links: the
    // A-label as is, in upper case with the root dot, and under it; the
    // policy reads each as the denylisted name (asserted). Two more are
    // only reported: the raw UTF-8 bytes `évil` as one label, and the one
    // label `evil.test` (an escaped dot): neither is the denylisted name
    // in the DNS (a resolver asks exactly those bytes), so serving them
    // is no escape.
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::RData;
    let asserted: [(&str, hickory_proto::rr::Name); 3] = [
        ("idn1.test", rr::name("xn--vil-9la.test.")),
        ("idn2.test", rr::name("XN--VIL-9LA.TEST.")),
        ("idn3.test", rr::name("www.xn--vil-9la.test.")),
    ];
    let reported: [(&str, hickory_proto::rr::Name); 2] =
        [("utf8.test", raw_name(&["évil".as_bytes(), b"test"])), ("dot.test", raw_name(&[b"evil.test"]))];
    let mut found = Vec::new();
    for mode in ["https", "dns"] {
        let w = crate::run::world_with(|two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            for (alias, target) in asserted.iter().chain(reported.iter()) {
                z.records.push((auth_key(target), 300, RData::A(A(three))));
                z.records.push((alias.to_string(), 300, RData::CNAME(CNAME(target.clone()))));
            }
            z
        });
        let p = &w.p;
        let pol = policy_file(
            &format!("escape-184-{mode}"),
            "default_action: allow\ndenylist:\n  domains: [\"évil.test\", \"*.évil.test\"]\n",
        );
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", mode), ("DNS_UPSTREAMS", upstream.as_str())]);
        let served = |alias: &str| match mode {
            "https" => http(&p.work, s_addr(&p.v4(3), 80), &get(alias)).text().contains("hello from"),
            _ => dig_short(p, alias).contains(&p.v4(3)),
        };
        for (alias, target) in &asserted {
            if served(alias) {
                found.push(format!("{mode}: {alias} via {target} served evil's address"));
            }
        }
        for (alias, target) in &reported {
            eprintln!(
                "{mode}: {alias} via {:?} (not the denylisted name): served {}",
                target.to_ascii(),
                served(alias)
            );
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_185_the_in_flight_reload_window_for_a_name_with_ports() {
    // escape_175's window on the named-port path: strict DNS mode,
    // `tcp/alias.test:7000` (alias.test a CNAME to evil.test at .3), the
    // default hardening, one unprivileged process asking alias.test while
    // a reload denylists evil.test. The replay leaves alias.test's answer
    // out (escape_161); does an answer delivered during the reload open
    // .3:7000 in the new ruleset? Up to eight reload pairs.
    let w = cname_world();
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\"]\n";
    let deny = format!("{allow}denylist:\n  domains: [\"evil.test\"]\n");
    let pol = policy_file("escape-185", allow);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000", "");
    let leaked = reload_race(p, &d, &pol, (allow, &deny), ("alias.test", 1, 5_000), 8);
    assert!(leaked.is_none(), "{}:7000 open after reload {leaked:?} denylisted evil.test", p.v4(3));
}

#[test]
fn escape_186_the_kept_links_cap_merged_over_several_answers() {
    // Strict DNS mode, `*.test` allowed, `other.test` denylisted (so a
    // single answer of more than 16 links is refused). merge.test answers
    // three times: through 16 clean links, then through one more (the
    // 17th kept), then through evil.test (an 18th: past the cap, never
    // kept). Each answer alone is short enough to be served. A reload
    // adds evil.test to the denylist: is the name's address replayed
    // because the link that matters was never recorded?
    use hickory_proto::rr::RecordType;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        let chain = |links: &[String]| {
            let mut recs = Vec::new();
            let mut from = "merge.test".to_owned();
            for l in links {
                recs.push(rr::cname(&format!("{from}."), &format!("{l}.")));
                from = l.clone();
            }
            recs.push(rr::a(&format!("{from}."), three));
            recs
        };
        let sixteen: Vec<String> = (1..=16).map(|i| format!("m{i}.test")).collect();
        z.raw.push((
            "merge.test".into(),
            RecordType::A,
            vec![chain(&sixteen), chain(&["m17.test".to_owned()]), chain(&["evil.test".to_owned()])],
        ));
        z
    });
    let p = &w.p;
    let allow =
        "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\ndenylist:\n  domains: [\"other.test\"";
    let pol = policy_file("escape-186", &format!("{allow}]\n"));
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    for i in 0..3 {
        let got = dig_short(p, "merge.test");
        assert!(got.contains(&p.v4(3)), "control: merge.test answer {i} is not served: {got}");
    }
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(o.text().contains("echo:"), "control: the learned address is not open: {o:?}");
    std::fs::write(&pol, format!("{allow}, \"evil.test\"]\n")).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(
        !o.text().contains("echo:"),
        "{}:7000 replayed: the 18th merged link was never kept: {o:?}",
        p.v4(3)
    );
}

#[test]
fn escape_187_a_kept_alive_http_connection_through_a_link_a_reload_denylists() {
    // escape_178 over plain HTTP: the first request for alias.test to
    // evil.test's .3:80 is served; a reload denylists evil.test; the next
    // request on the same kept-alive connection names alias.test again.
    // Each request head is decided under the policy current then.
    let w = cname_world();
    let p = &w.p;
    let pol = policy_file("escape-187", "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let to = s_addr(&p.v4(3), 80);
    let keep = "GET / HTTP/1.1\r\nHost: alias.test\r\n\r\n".to_owned();
    let writer = {
        let pol = pol.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(&pol, "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n")
                .expect("rewrite");
        })
    };
    let o = tcp(
        &p.work,
        to,
        vec![keep.into_bytes(), get("alias.test").into_bytes()],
        Duration::from_millis(2500),
        Duration::from_secs(8),
    );
    writer.join().expect("writer");
    d.wait_logged("policy reloaded", Duration::from_secs(10));
    let answers = o.text().matches("hello from").count();
    assert!(answers >= 1, "control: the first request was not served: {o:?}");
    assert_eq!(
        answers,
        1,
        "the request after the reload was served on the kept-alive connection: {}",
        o.text()
    );
}

// Round 11: around round 10's fixes (links, DNAME rewrites, reload replay).

/// DNAME answers whose records come in an order egret's rewrite does not
/// expect, each in the `*.evil.test` subtree at .3, and controls.
fn dname_order_world() -> World {
    use hickory_proto::rr::RecordType;
    crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        let cases: Vec<(&str, Vec<hickory_proto::rr::Record>, &str)> = vec![
            // Control: a chain of two DNAMEs in the order they apply.
            (
                "fwd.d1.test",
                vec![rr::dname("d1.test.", "d2.test."), rr::dname("d2.test.", "evil.test.")],
                "fwd.evil.test.",
            ),
            // The same two DNAMEs, the second one first.
            (
                "rev.d3.test",
                vec![rr::dname("d4.test.", "evil.test."), rr::dname("d3.test.", "d4.test.")],
                "rev.evil.test.",
            ),
            // A DNAME, then the CNAME whose target it rewrites.
            (
                "late.test",
                vec![rr::dname("d5.test.", "evil.test."), rr::cname("late.test.", "late.d5.test.")],
                "late.evil.test.",
            ),
            // Control: a clean chain to .3.
            ("ok.test", vec![rr::cname("ok.test.", "ok.cdn.test.")], "ok.cdn.test."),
        ];
        for (q, recs, owner) in cases {
            let mut with_a = recs.clone();
            with_a.push(rr::a(owner, three));
            z.raw.push((q.to_owned(), RecordType::A, vec![with_a]));
            z.raw.push((q.to_owned(), RecordType::AAAA, vec![recs]));
        }
        z
    })
}

#[test]
fn escape_190_dname_records_in_an_order_the_rewrite_does_not_follow() {
    // `*.evil.test` denylisted (the subtree, not the apex). `check_response`
    // rewrites under a DNAME only the question and the links seen BEFORE
    // it in the answer section. Answers: (rev) `d4.test DNAME evil.test`
    // then `d3.test DNAME d4.test` for `rev.d3.test` (the name leads to
    // rev.d4.test, then rev.evil.test); (late) `d5.test DNAME evil.test`
    // then `late.test CNAME late.d5.test` (→ late.evil.test). The chain
    // egret judges holds evil.test (the apex, not denylisted), d4.test,
    // rev.d4.test / late.d5.test: is rev.evil.test's address served,
    // learned, or passed by the proxies' check?
    let deny = "denylist:\n  domains: [\"*.evil.test\"]\n";
    let mut found = Vec::new();
    for mode in ["dns", "dns-strict", "https"] {
        let w = dname_order_world();
        let p = &w.p;
        let yaml = match mode {
            "dns-strict" => format!("default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n{deny}"),
            _ => format!("default_action: allow\n{deny}"),
        };
        let pol = policy_file(&format!("escape-190-{mode}"), &yaml);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", mode), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "7000", "");
        let evil = p.v4(3);
        if mode == "https" {
            let to = s_addr(&evil, 80);
            http(&p.work, to, &get("fwd.d1.test")).assert_not_served("https: control: fwd.d1.test");
            for q in ["rev.d3.test", "late.test"] {
                let o = http(&p.work, to, &get(q));
                if o.text().contains("hello from") {
                    found.push(format!("https: {q} served from {evil}"));
                }
            }
            let o = http(&p.work, to, &get("ok.test"));
            assert!(o.text().contains("hello from"), "https: control: ok.test is not served: {o:?}");
        } else {
            let to = s_addr(&evil, 7000);
            let fwd = dig_short(p, "fwd.d1.test");
            assert!(!fwd.contains(&evil), "{mode}: control: fwd.d1.test was served: {fwd}");
            if mode == "dns-strict" {
                let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
                assert!(!o.text().contains("echo:"), "{mode}: control: {evil}:7000 open too early: {o:?}");
            }
            for q in ["rev.d3.test", "late.test"] {
                let a = dig_short(p, q);
                if a.contains(&evil) {
                    found.push(format!("{mode}: {q} served {evil}: {}", a.trim().replace('\n', " ")));
                }
            }
            if mode == "dns-strict" {
                let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
                if o.text().contains("echo:") {
                    found.push(format!("{mode}: {evil}:7000 opened (learned through rev/late)"));
                }
            }
            let ok = dig_short(p, "ok.test");
            assert!(ok.contains(&evil), "{mode}: control: ok.test is not answered: {ok}");
            if mode == "dns-strict" {
                let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
                assert!(o.text().contains("echo:"), "{mode}: control: ok.test's address not open: {o:?}");
            }
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_191_a_reload_replays_an_address_learned_through_dnames_out_of_order() {
    // Strict DNS mode, `*.test` allowed, nothing denylisted yet. A name is
    // answered (its .3 learned); a reload then denylists `*.evil.test`.
    // The control fwd.d1.test's chain (DNAMEs in order) holds
    // fwd.evil.test: not replayed (escape_151's case). rev.d3.test and
    // late.test lead to rev.evil.test / late.evil.test through DNAMEs
    // listed before the names they rewrite: are they replayed?
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let deny = "denylist:\n  domains: [\"*.evil.test\"]\n";
    let mut found = Vec::new();
    for q in ["fwd.d1.test", "rev.d3.test", "late.test"] {
        let w = dname_order_world();
        let p = &w.p;
        let pol = policy_file(&format!("escape-191-{q}"), allow);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000", "");
        let to = s_addr(&p.v4(3), 7000);
        let answer = dig_short(p, q);
        assert!(answer.contains(&p.v4(3)), "control: {q} is not answered: {answer}");
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        assert!(o.text().contains("echo:"), "control: {q}: the learned address is not open: {o:?}");
        std::fs::write(&pol, format!("{allow}{deny}")).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        let open = o.text().contains("echo:");
        if q == "fwd.d1.test" {
            assert!(!open, "control: fwd.evil.test's address came back under fwd.d1.test: {o:?}");
        } else if open {
            found.push(format!("{q}: {}:7000 replayed after the reload denylisted *.evil.test", p.v4(3)));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_192_a_name_with_ports_whose_dnames_come_out_of_order_in_https_mode() {
    // HTTPS mode, `tcp/<name>:7000` allowed (egret's refresher resolves it
    // and opens its addresses on TCP 7000), `*.evil.test` denylisted.
    // Controls: ok.test (clean chain) opens .3:7000; fwd.d1.test (DNAMEs
    // in order, to fwd.evil.test) opens nothing. Attack: rev.d3.test and
    // late.test, whose DNAMEs come before the names they rewrite.
    let mut found = Vec::new();
    for q in ["ok.test", "fwd.d1.test", "rev.d3.test", "late.test"] {
        let w = dname_order_world();
        let p = &w.p;
        let yaml = format!(
            "default_action: deny\nallowlist:\n  domains: [\"tcp/{q}:7000\"]\ndenylist:\n  domains: [\"*.evil.test\"]\n"
        );
        let pol = policy_file(&format!("escape-192-{q}"), &yaml);
        let upstream = format!("{}:53", p.v4(2));
        let d =
            Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "7000", "");
        let to = s_addr(&p.v4(3), 7000);
        match q {
            "ok.test" => {
                d.wait_logged("ok.test: 1 address(es) open on its ports", Duration::from_secs(10));
            }
            "fwd.d1.test" => {
                d.wait_logged("not opened, its answer leads through denylisted", Duration::from_secs(10));
            }
            _ => std::thread::sleep(Duration::from_secs(3)),
        }
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        let open = o.text().contains("echo:");
        match q {
            "ok.test" => assert!(open, "control: ok.test's named port is not open: {o:?}"),
            "fwd.d1.test" => assert!(!open, "control: fwd.d1.test opened .3:7000: {o:?}"),
            _ if open => found.push(format!("{q}: {}:7000 opened through *.evil.test", p.v4(3))),
            _ => {}
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

/// As [`held_tls`], waiting up to `hold` for the go.
fn held_tls_for(
    ns: &str,
    to: SocketAddr,
    sni: &'static str,
    hold: Duration,
    ready: std::sync::mpsc::Sender<bool>,
    go: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<(bool, String)> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let read_until = |s: &mut TcpStream, want: &[u8], got: &mut Vec<u8>| {
                let start = Instant::now();
                let mut buf = [0u8; 4096];
                while start.elapsed() < Duration::from_secs(3) {
                    if got.windows(want.len()).any(|w| w == want) {
                        return true;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                        Err(_) => return false,
                    }
                }
                got.windows(want.len()).any(|w| w == want)
            };
            let Ok(mut s) = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT) else {
                let _ = ready.send(false);
                return (false, "connect failed".to_owned());
            };
            s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let mut first = hello(Some(sni.as_bytes()), 0);
            first.extend_from_slice(b"\na\n");
            let mut got = Vec::new();
            let up = s.write_all(&first).is_ok() && read_until(&mut s, b"echo:a\n", &mut got);
            let _ = ready.send(up);
            if !up || go.recv_timeout(hold).is_err() {
                return (false, "not relayed before the reload".to_owned());
            }
            let mut after = Vec::new();
            let b = s.write_all(b"b\n").is_ok() && read_until(&mut s, b"echo:b\n", &mut after);
            (b, util::text(&after))
        })
    })
}

/// `n` HTTP requests from the workload to `to`, each naming a distinct
/// unresolvable host `f<i>.z<i % 50>.test` (each one a check lookup and
/// a check cache entry), over `threads` threads. Returns how many got a
/// reply.
fn host_flood(ns: &str, to: SocketAddr, n: usize, threads: usize) -> usize {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (ns, done) = (ns.to_owned(), done.clone());
            std::thread::spawn(move || {
                in_netns(&ns, move || {
                    for i in (t..n).step_by(threads) {
                        let Ok(mut s) = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT) else { continue };
                        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                        let req = format!(
                            "GET / HTTP/1.1\r\nHost: f{i}.z{}.test\r\nConnection: close\r\n\r\n",
                            i % 50
                        );
                        if s.write_all(req.as_bytes()).is_err() {
                            continue;
                        }
                        let mut b = [0u8; 512];
                        if matches!(s.read(&mut b), Ok(k) if k > 0) {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    done.load(Ordering::Relaxed)
}

#[test]
fn escape_193_an_open_connection_whose_chain_the_check_cache_forgot() {
    // HTTPS mode, default allow, DNS_TTL_MIN at its default (30 s).
    // alias.test (TTL 1) CNAME evil.test at .3. A TLS connection names
    // alias.test and goes to .3:443: allowed and relayed (escape_178's
    // setup). A reload that denylists evil.test cuts it by the chain the
    // check cache recorded for alias.test. The cache keeps 10,000 names
    // (`MAX_NAMES`), and when full prunes entries whose addresses expired,
    // chain and all. The workload waits out alias.test's 30 s, then names
    // 10,100 unresolvable hosts in HTTP requests (each one a lookup and an
    // entry): the prune drops alias.test's chain. Is the connection still
    // cut by the reload? Phase 1 (no flood) is the control.
    let mut found = Vec::new();
    for flood in [false, true] {
        let w = crate::run::world_with(|two, three| {
            use hickory_proto::rr::rdata::{A, CNAME};
            use hickory_proto::rr::RData;
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            z.records.push(("evil.test".into(), 1, RData::A(A(three))));
            z.records.push(("alias.test".into(), 1, RData::CNAME(CNAME(rr::name("evil.test.")))));
            z
        });
        let p = &w.p;
        let pol = policy_file(
            &format!("escape-193-{flood}"),
            "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n",
        );
        let upstream = format!("{}:53", p.v4(2));
        let d =
            Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "443", "");
        let to = s_addr(&p.v4(3), 443);
        let mut held = Vec::new();
        for sni in ["alias.test", "evil.test"] {
            let (rtx, rrx) = std::sync::mpsc::channel();
            let (gtx, grx) = std::sync::mpsc::channel();
            let h = held_tls_for(&p.work, to, sni, Duration::from_secs(240), rtx, grx);
            assert_eq!(rrx.recv_timeout(Duration::from_secs(10)), Ok(true), "control: {sni} is not relayed");
            held.push((sni, gtx, h));
        }
        std::thread::sleep(Duration::from_secs(32));
        if flood {
            let t = Instant::now();
            let got = host_flood(&p.work, s_addr(&p.v4(2), 80), 10_100, 16);
            eprintln!("flood: {got} of 10100 requests answered in {:?}", t.elapsed());
        }
        std::fs::write(&pol, "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n")
            .expect("rewrite");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
        let mut kept = Vec::new();
        for (sni, go, h) in held {
            let _ = go.send(());
            kept.push((sni, h.join().expect("held")));
        }
        eprintln!("flood={flood}: after the reload: {kept:?}");
        let mut fresh = hello(Some(b"alias.test"), 0);
        fresh.extend_from_slice(b"\nc\n");
        let o = tcp(&p.work, to, vec![fresh], Duration::ZERO, CLIENT_TIMEOUT);
        o.assert_not_served("control: a new alias.test connection after the reload");
        let evil = &kept.iter().find(|k| k.0 == "evil.test").expect("evil").1;
        assert!(!evil.0, "control: the connection naming evil.test was not cut: {:?}", evil.1);
        let alias = &kept.iter().find(|k| k.0 == "alias.test").expect("alias").1;
        if !flood {
            assert!(!alias.0, "control (no flood): the alias.test connection was not cut: {:?}", alias.1);
        } else if alias.0 {
            found.push(format!(
                "after the flood, alias.test's connection to .3:443 kept flowing: {:?}",
                alias.1
            ));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn escape_194_a_dname_owned_by_the_root() {
    // `*.evil.test` denylisted. The answer for `q.test` carries a DNAME
    // owned by the root, `. DNAME evil.test.` (every name moves under
    // evil.test: q.test → q.test.evil.test), and the A record of
    // q.test.evil.test. `dname_rewrite` strips the owner as a text suffix
    // followed by a dot: the root's text is ".", which no name ends in,
    // so the question is not moved and the chain holds the apex only. The
    // control is the same rewrite by a DNAME owned by `test.`.
    use hickory_proto::rr::RecordType;
    let mut found = Vec::new();
    for mode in ["dns", "dns-strict"] {
        let w = crate::run::world_with(|two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            let root = rr::dname_wire(".", {
                let mut wire = Vec::new();
                use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
                rr::name("evil.test.").emit(&mut BinEncoder::new(&mut wire)).expect("emit");
                wire
            });
            z.raw.push(("q.test".into(), RecordType::A, vec![vec![root, rr::a("q.test.evil.test.", three)]]));
            z.raw.push((
                "c.test".into(),
                RecordType::A,
                vec![vec![rr::dname("test.", "evil.test."), rr::a("c.evil.test.", three)]],
            ));
            z
        });
        let p = &w.p;
        let yaml = match mode {
            "dns-strict" => "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\ndenylist:\n  domains: [\"*.evil.test\"]\n",
            _ => "default_action: allow\ndenylist:\n  domains: [\"*.evil.test\"]\n",
        };
        let pol = policy_file(&format!("escape-194-{mode}"), yaml);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", mode), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "7000", "");
        let evil = p.v4(3);
        let c = dig_short(p, "c.test");
        assert!(!c.contains(&evil), "{mode}: control: c.test (DNAME test. → evil.test.) was served: {c}");
        let a = dig_short(p, "allowed.test");
        assert!(a.contains(&p.v4(2)), "{mode}: control: allowed.test is not answered: {a}");
        let q = dig_short(p, "q.test");
        if q.contains(&evil) {
            found.push(format!("{mode}: q.test served {evil}: {}", q.trim().replace('\n', " ")));
        }
        if mode == "dns-strict" {
            let o = tcp(&p.work, s_addr(&evil, 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
            if o.text().contains("echo:") {
                found.push(format!("{mode}: {evil}:7000 opened through the root DNAME"));
            }
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_195_many_learned_addresses_hold_the_learner_through_a_reload() {
    // Strict DNS mode, `*.test` allowed. One unprivileged workload asks
    // (over TCP, inside the hardening's 50 queries/s and 300 names per
    // zone) for 250 names of its own zone, each answered with 2,400
    // distinct A records: 600,000 learned addresses (nothing bounds the
    // learned sets or `Learned`). A reload (the operator's, any change)
    // holds the learner's lock from before `nft::apply` to after the
    // replay of every learned address, and every DNS answer of every
    // tenant waits on that lock to be learned. How long does the reload
    // hold it, and how long does a co-tenant's `allowed.test` wait?
    use hickory_proto::rr::RecordType;
    const NAMES: usize = 250;
    const PER: usize = 2_400;
    let w = crate::run::world_with(|two, _three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        for i in 0..NAMES {
            let owner = format!("big{i}.test.");
            let recs = (0..PER)
                .map(|j| {
                    let n = u32::try_from(i * PER + j).expect("fits");
                    rr::a(&owner, std::net::Ipv4Addr::from(0x0a40_0000u32 + n))
                })
                .collect();
            z.raw.push((format!("big{i}.test"), RecordType::A, vec![recs]));
        }
        z
    });
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let pol = policy_file("escape-195", allow);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let dig = |name: &str, tcp: bool| {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", &format!("@{}", p.v4(2)), name, "A", "+time=10", "+tries=1"]);
        if tcp {
            c.arg("+tcp");
        }
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        (out.contains("status: NOERROR"), start.elapsed(), out)
    };
    let (ok, base, out) = dig("allowed.test", false);
    assert!(ok, "control: allowed.test is not answered: {out}");
    let t = Instant::now();
    let mut learned = 0;
    for i in 0..NAMES {
        let (ok, _, out) = dig(&format!("big{i}.test"), true);
        learned += usize::from(ok && out.contains("ANSWER: 2400,"));
        if i == 0 {
            eprintln!("first big answer: {}", out.lines().take(12).collect::<Vec<_>>().join(" | "));
        }
    }
    eprintln!("{learned} of {NAMES} big answers served in {:?}; baseline dig {base:?}", t.elapsed());
    assert!(learned > NAMES / 2, "control: the big answers were not served");
    // The reload, and a co-tenant's digs meanwhile.
    std::fs::write(&pol, format!("{allow}denylist:\n  domains: [\"other.test\"]\n")).expect("rewrite");
    let written = Instant::now();
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    while written.elapsed() < Duration::from_secs(20) {
        let (ok, took, _) = dig("allowed.test", false);
        worst = worst.max(took);
        answered += usize::from(ok);
        let done = d.logged().iter().any(|l| l.contains("learned addresses restored after reload"));
        if done && written.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(60));
    let held = written.elapsed();
    eprintln!("reload done ({line}) within {held:?}; co-tenant digs: {answered} answered, worst {worst:?}");
    drop(d);
    // The reload itself may take a while with this many addresses (it
    // finished: `wait_logged` above); what must not happen is that every
    // tenant's answers wait for it (fixed: the replay judges without the
    // learner's lock and installs a chunk per hold).
    assert!(
        worst < Duration::from_secs(2),
        "a reload with {} learned addresses: the co-tenant's DNS waited {worst:?} (the reload took {held:?})",
        learned * PER
    );
}

#[test]
fn escape_196_https_records_in_an_a_answer_and_a_record_owned_off_the_chain() {
    // Strict DNS mode, `*.test` allowed, `evil.test` and `*.evil.test`
    // denylisted; each case in its own run (one learned .3 opens .3:7000).
    // (h1) an A question answered with `h1.test HTTPS 1 x.evil.test.
    // ipv4hint=.3`; (h2) the same in AliasMode (priority 0, with a hint
    // all the same); (h3) an A question answered only by `x.evil.test A
    // .3`, a record whose owner no link leads to (no CNAME, no DNAME): is
    // its address learned under h3.test? Control: ok.test A .3 opens.
    use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey, SvcParamValue, SVCB};
    use hickory_proto::rr::rdata::{A, HTTPS};
    use hickory_proto::rr::{RData, Record, RecordType};
    let mut found = Vec::new();
    for q in ["ok.test", "h1.test", "h2.test", "h3.test"] {
        let w = crate::run::world_with(|two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            let https = |owner: &str, prio: u16| {
                let v = SVCB::new(
                    prio,
                    rr::name("x.evil.test."),
                    vec![(SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(vec![A(three)])))],
                );
                Record::from_rdata(rr::name(owner), 300, RData::HTTPS(HTTPS(v)))
            };
            z.raw.push(("ok.test".into(), RecordType::A, vec![vec![rr::a("ok.test.", three)]]));
            z.raw.push(("h1.test".into(), RecordType::A, vec![vec![https("h1.test.", 1)]]));
            z.raw.push(("h2.test".into(), RecordType::A, vec![vec![https("h2.test.", 0)]]));
            z.raw.push(("h3.test".into(), RecordType::A, vec![vec![rr::a("x.evil.test.", three)]]));
            z
        });
        let p = &w.p;
        let pol = policy_file(
            &format!("escape-196-{q}"),
            "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\ndenylist:\n  domains: [\"evil.test\", \"*.evil.test\"]\n",
        );
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000", "");
        let to = s_addr(&p.v4(3), 7000);
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        assert!(!o.text().contains("echo:"), "{q}: control: .3:7000 open before any answer: {o:?}");
        let a = dig_short(p, q);
        let o = tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
        let open = o.text().contains("echo:");
        if q == "ok.test" {
            assert!(open, "control: ok.test's .3 is not open: {a} {o:?}");
        } else if open {
            found.push(format!("{q}: .3:7000 opened (answer {})", a.trim().replace('\n', " ")));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_197_big_answers_keep_the_learner_busy_for_a_co_tenant() {
    // Strict DNS mode, `*.test` allowed. The attacker (uid 65534) runs 8
    // parallel loops of `dig +tcp` for 40 names of its zone, each answered
    // with 2,400 A records (each answer learned under the learner's one
    // lock, 2,400 set elements per answer), inside the hardening's rate
    // (its refusals are answers too). Meanwhile a co-tenant (another uid)
    // asks for allowed.test every 200 ms: how long does it wait?
    use hickory_proto::rr::RecordType;
    const NAMES: usize = 40;
    const PER: usize = 2_400;
    let w = crate::run::world_with(|two, _three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        for i in 0..NAMES {
            let owner = format!("big{i}.test.");
            let recs = (0..PER)
                .map(|j| {
                    let n = u32::try_from(i * PER + j).expect("fits");
                    rr::a(&owner, std::net::Ipv4Addr::from(0x0a40_0000u32 + n))
                })
                .collect();
            z.raw.push((format!("big{i}.test"), RecordType::A, vec![recs]));
        }
        z
    });
    let p = &w.p;
    let pol = policy_file("escape-197", "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let dig = |who: Priv, name: &str, tcp: bool| {
        let mut c = as_workload(&p.work, who);
        c.args(["dig", &format!("@{}", p.v4(2)), name, "A", "+time=10", "+tries=1"]);
        if tcp {
            c.arg("+tcp");
        }
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        (out.contains("status: NOERROR"), start.elapsed())
    };
    let (ok, base) = dig(Priv::NetRaw, "allowed.test", false);
    assert!(ok, "control: the co-tenant's allowed.test is not answered");
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let worst = std::thread::scope(|s| {
        for t in 0..8 {
            let (stop, served) = (stop.clone(), served.clone());
            let dig = &dig;
            s.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    if dig(Priv::Nobody, &format!("big{}.test", i % NAMES), true).0 {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 8;
                }
            });
        }
        let mut worst = Duration::ZERO;
        let mut answered = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(12) {
            std::thread::sleep(Duration::from_millis(200));
            let (ok, took) = dig(Priv::NetRaw, "allowed.test", false);
            worst = worst.max(took);
            answered += usize::from(ok);
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!("co-tenant: {answered} answered, worst {worst:?} (baseline {base:?})");
        worst
    });
    eprintln!("attacker: {} big answers served", served.load(Ordering::Relaxed));
    assert!(served.load(Ordering::Relaxed) > 10, "control: the big answers were not served");
    drop(d);
    assert!(worst < Duration::from_secs(1), "the co-tenant's DNS waited {worst:?} behind the big answers");
}

/// A WebSocket held open from the workload: the handshake for `host` to
/// `to`, the server's first frame, a frame "a" echoed; on the go, one masked text frame "b"
/// and its echo. Returns (echoed after the go, what was read).
fn held_ws(
    ns: &str,
    to: SocketAddr,
    host: &'static str,
    ready: std::sync::mpsc::Sender<bool>,
    go: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<(bool, String)> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let read_until = |s: &mut TcpStream, want: &[u8], got: &mut Vec<u8>| {
                let start = Instant::now();
                let mut buf = [0u8; 4096];
                while start.elapsed() < Duration::from_secs(3) {
                    if got.windows(want.len()).any(|w| w == want) {
                        return true;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                        Err(_) => return false,
                    }
                }
                got.windows(want.len()).any(|w| w == want)
            };
            let Ok(mut s) = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT) else {
                let _ = ready.send(false);
                return (false, "connect failed".to_owned());
            };
            s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let hs = format!(
                "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            let mut got = Vec::new();
            let up = s.write_all(hs.as_bytes()).is_ok()
                && read_until(&mut s, b"hello from", &mut got)
                && s.write_all(&[0x81u8, 0x81, 0, 0, 0, 0, b'a']).is_ok()
                && read_until(&mut s, b"echo:a", &mut got);
            let _ = ready.send(up);
            if !up || go.recv_timeout(Duration::from_secs(30)).is_err() {
                return (false, format!("not upgraded before the reload: {}", util::text(&got)));
            }
            // FIN + text, masked, length 1, a zero mask.
            let frame = [0x81u8, 0x81, 0, 0, 0, 0, b'b'];
            let mut after = Vec::new();
            let b = s.write_all(&frame).is_ok() && read_until(&mut s, b"echo:b", &mut after);
            (b, util::text(&after))
        })
    })
}

#[test]
fn escape_198_an_upgraded_websocket_through_a_link_a_reload_denylists() {
    // HTTPS mode, default allow. A WebSocket handshake names alias.test (a
    // CNAME to evil.test) and goes to .3:80: allowed, upgraded (101), and
    // relayed as a tunnel from then on. A reload then denylists evil.test:
    // is the upgraded connection cut by alias.test's chain, as a TLS one
    // is (escape_178)? Control: one naming evil.test itself.
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::RData;
    let w = crate::run::bare_world(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("evil.test".into(), 300, RData::A(A(three))));
        z.records.push(("alias.test".into(), 300, RData::CNAME(CNAME(rr::name("evil.test.")))));
        z
    });
    let p = &w.p;
    let _ws = Pair::spawn_ready(
        &p.up,
        "python3",
        &[&util::data("netns/ws.py").to_string_lossy(), "server", "80", &p.v4(3)],
    );
    let pol = policy_file("escape-198", "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let to = s_addr(&p.v4(3), 80);
    let mut held = Vec::new();
    for host in ["alias.test", "evil.test"] {
        let (rtx, rrx) = std::sync::mpsc::channel();
        let (gtx, grx) = std::sync::mpsc::channel();
        let h = held_ws(&p.work, to, host, rtx, grx);
        assert_eq!(rrx.recv_timeout(Duration::from_secs(10)), Ok(true), "control: {host} is not upgraded");
        held.push((host, gtx, h));
    }
    std::fs::write(&pol, "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n").expect("rewrite");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let mut kept = Vec::new();
    for (host, go, h) in held {
        let _ = go.send(());
        kept.push((host, h.join().expect("held")));
    }
    eprintln!("after the reload: {kept:?}");
    let evil = &kept.iter().find(|k| k.0 == "evil.test").expect("evil").1;
    assert!(!evil.0, "control: the WebSocket naming evil.test was not cut: {:?}", evil.1);
    let alias = &kept.iter().find(|k| k.0 == "alias.test").expect("alias").1;
    assert!(!alias.0, "the upgraded WebSocket through alias.test kept flowing: {:?}", alias.1);
}

#[test]
fn escape_200_a_chain_past_the_kept_links_hides_a_link_with_ports_when_nothing_is_denylisted() {
    // Strict DNS mode, NO denylist of names (so an over-long chain is not
    // refused whole): allowlist `alias.test`, `long.test`, `pad.test` and
    // `tcp/evil.test:7001`. An answer that leads through evil.test opens
    // its addresses on TCP 7001 only (escape_90, escape_180). Control:
    // alias.test (one CNAME to evil.test) opens .3:7001, not .3:7000.
    // (long) long.test reaches evil.test through 17 CNAMEs, evil.test
    // being the 18th link; (pad) pad.test's answer lists 17 records of
    // other owners first, then `pad.test CNAME evil.test`. Does either
    // open .3:7000 (port_links only judges the kept 17 links)?
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{RData, Record, RecordType};
    let mut found = Vec::new();
    for q in ["long.test", "pad.test"] {
        let w = crate::run::world_with(|two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            z.records.push(("evil.test".into(), 300, RData::A(hickory_proto::rr::rdata::A(three))));
            z.records.push((
                "alias.test".into(),
                300,
                RData::CNAME(hickory_proto::rr::rdata::CNAME(rr::name("evil.test."))),
            ));
            let mut long = vec![rr::cname("long.test.", "l1.test.")];
            for i in 1..17 {
                long.push(rr::cname(&format!("l{i}.test."), &format!("l{}.test.", i + 1)));
            }
            long.push(rr::cname("l17.test.", "evil.test."));
            long.push(rr::a("evil.test.", three));
            z.raw.push(("long.test".into(), RecordType::A, vec![long]));
            let mut pad: Vec<Record> = (1..=17)
                .map(|i| {
                    Record::from_rdata(
                        rr::name(&format!("j{i}.test.")),
                        300,
                        RData::TXT(TXT::new(vec!["x".into()])),
                    )
                })
                .collect();
            pad.push(rr::cname("pad.test.", "evil.test."));
            pad.push(rr::a("evil.test.", three));
            z.raw.push(("pad.test".into(), RecordType::A, vec![pad]));
            z
        });
        let p = &w.p;
        let pol = policy_file(
            &format!("escape-200-{q}"),
            "allowlist:\n  domains: [\"alias.test\", \"long.test\", \"pad.test\", \"tcp/evil.test:7001\"]\n",
        );
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        assert!(!on(7000) && !on(7001), "{q}: control: .3 open before any answer");
        assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: alias.test is not answered");
        assert!(on(7001) && !on(7000), "{q}: control: alias.test's answer is not limited to .3:7001");
        let a = dig_short(p, q);
        eprintln!("{q}: {a}");
        if on(7000) {
            found.push(format!("{q}: .3:7000 opened (answer {})", a.trim().replace('\n', " ")));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_201_answers_in_flight_while_a_reload_drops_the_ips_entry_the_guard_needed() {
    // Strict DNS mode, GUARD_ADDRESSES=private (.3, 10.200.x.3, is
    // guarded). First policy: evil.test allowed and `allowlist.ips`
    // listing .3, so evil.test's answer passes the guard; the reload
    // drops the ips entry: from then on the guard refuses evil.test's
    // answer (NXDOMAIN) and .3 is open for nothing. The learner re-judges
    // an answer delivered under the old policy (its name, its chain)
    // under the new one once the reload lets go of it (escape_174), but
    // is the guard judged again? The workload keeps asking evil.test
    // while the reload happens; up to five reload pairs.
    let w = cname_world();
    let p = &w.p;
    let allow = format!("allowlist:\n  ips: [\"{}/32\"]\n  domains: [\"evil.test\"]\n", p.v4(3));
    let narrowed = "allowlist:\n  domains: [\"evil.test\"]\n".to_string();
    let pol = policy_file("escape-201", &allow);
    let upstream = format!("{}:53", p.v4(2));
    let env = [
        ("FILTER_MODE", "dns-strict"),
        ("DNS_UPSTREAMS", upstream.as_str()),
        ("DNS_HARDENING", "false"),
        ("GUARD_ADDRESSES", "private"),
    ];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000", "");
    let leaked = reload_race(p, &d, &pol, (&allow, &narrowed), ("evil.test", 3, 20_000), 5);
    let guarded =
        d.events.try_iter().filter(|e| e["qname"] == "evil.test" && e["action"] == "BLOCKED").count();
    eprintln!("evil.test refused events: {guarded}");
    drop(d);
    // Control: started with the narrowed policy, .3:7000 stays shut
    // after evil.test is asked (the guard refuses the answer).
    std::fs::write(&pol, &narrowed).expect("rewrite policy");
    let d = Daemon::start(&p.work, &pol, &env);
    let a = dig_short(p, "evil.test");
    let o = tcp(&p.work, s_addr(&p.v4(3), 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT);
    assert!(
        !a.contains(&p.v4(3)) && !o.text().contains("echo:"),
        "control: the narrowed policy opens .3: {a} {o:?}"
    );
    drop(d);
    assert!(
        leaked.is_none(),
        "{}:7000 open after reload {leaked:?} dropped the ips entry the guard needed",
        p.v4(3)
    );
}

/// Elements of `set` in `table inet egret` of namespace `ns` whose text
/// starts with `prefix`.
fn set_count_prefixed(ns: &str, set: &str, prefix: &str) -> usize {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "set", "inet", "egret", set])
        .output()
        .expect("nft list set");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c == ',' || c == '{' || c == '}' || c.is_whitespace())
        .filter(|t| t.starts_with(prefix))
        .count()
}

#[test]
fn escape_202_a_second_reload_while_the_first_still_puts_chunks_back() {
    // Strict DNS mode, `*.test` allowed. The workload has 60 names x
    // 2,400 addresses learned (144,000: 36 chunks of the replay) and
    // alias.test (a CNAME to evil.test at .3). Reload 1 (an unrelated
    // change) is written, and as soon as its ruleset is applied (its
    // chunked replay running), reload 2 denylisting evil.test is written,
    // while the workload keeps asking alias.test. Afterwards: is .3:7000
    // open (an entry judged under reload 1's policy put back after reload
    // 2's replay, or a fresh answer learned in between), and are big
    // addresses lost from learned4 (still allowed, not put back)?
    use hickory_proto::rr::RecordType;
    const NAMES: usize = 60;
    const PER: usize = 2_400;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push((
            "evil.test".into(),
            300,
            hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(three)),
        ));
        z.records.push((
            "alias.test".into(),
            300,
            hickory_proto::rr::RData::CNAME(hickory_proto::rr::rdata::CNAME(rr::name("evil.test."))),
        ));
        for i in 0..NAMES {
            let owner = format!("big{i}.test.");
            let recs = (0..PER)
                .map(|j| {
                    let n = u32::try_from(i * PER + j).expect("fits");
                    rr::a(&owner, std::net::Ipv4Addr::from(0x0a40_0000u32 + n))
                })
                .collect();
            z.raw.push((format!("big{i}.test"), RecordType::A, vec![recs]));
        }
        z
    });
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n";
    let other = format!("{allow}denylist:\n  domains: [\"other.test\"]\n");
    let deny = format!("{allow}denylist:\n  domains: [\"evil.test\"]\n");
    let pol = policy_file("escape-202", allow);
    let upstream = format!("{}:53", p.v4(2));
    let env =
        [("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_HARDENING", "false")];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000", "");
    let to = s_addr(&p.v4(3), 7000);
    let open =
        || tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT).text().contains("echo:");
    let mut served = 0;
    for i in 0..NAMES {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args([
            "dig",
            &format!("@{}", p.v4(2)),
            &format!("big{i}.test"),
            "A",
            "+tcp",
            "+time=10",
            "+tries=1",
        ]);
        served += usize::from(util::run(c).1.contains("ANSWER: 2400,"));
    }
    assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: alias.test is not answered");
    assert!(open(), "control: .3:7000 is not open after alias.test's answer");
    let before = set_count_prefixed(&p.work, "learned4", "10.6");
    eprintln!("{served} big answers served; learned4 holds {before} big addresses");
    assert!(before >= 100_000, "control: the big answers were not learned ({before})");
    let mut leaks = Vec::new();
    let mut lost = Vec::new();
    let count = |d: &Daemon, what: &str| d.logged().iter().filter(|l| l.contains(what)).count();
    // Waits for at least one more replay than `had`, then for quiet.
    let settle = |d: &Daemon, had: usize| {
        let t = Instant::now();
        while count(d, "learned addresses restored after reload") <= had
            && t.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut last = count(d, "learned addresses restored after reload");
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let now = count(d, "learned addresses restored after reload");
            if now == last {
                return now;
            }
            last = now;
        }
    };
    for round in 0..3 {
        let flood = DigFlood::start(p, "alias.test", 3, 20_000, &format!("escape-202-{round}"));
        let (applied, had) =
            (count(&d, "installed table inet egret"), count(&d, "learned addresses restored after reload"));
        std::fs::write(&pol, &other).expect("rewrite");
        let t = Instant::now();
        while count(&d, "installed table inet egret") == applied && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let busy = count(&d, "learned addresses restored after reload") == had;
        std::fs::write(&pol, &deny).expect("rewrite");
        let t = Instant::now();
        while count(&d, "learned addresses restored after reload") < had + 2
            && t.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let reloads = settle(&d, had) - had;
        let lines: Vec<String> = d
            .logged()
            .into_iter()
            .filter(|l| l.contains("restored after reload") || l.contains("policy reloaded"))
            .collect();
        eprintln!("{:#?}", &lines[lines.len().saturating_sub(4)..]);
        drop(flood);
        let refused = dig_short(p, "alias.test");
        assert!(!refused.contains(&p.v4(3)), "control: alias.test served after the reloads: {refused}");
        let after = set_count_prefixed(&p.work, "learned4", "10.6");
        let o = open();
        eprintln!(
            "round {round}: {reloads} replays (second written during the first's replay: {busy}), .3:7000 open {o}, learned4 big {after} of {before}"
        );
        if o {
            leaks.push(round);
        }
        if after + 10 < before {
            lost.push((round, after));
        }
        // Back to the first policy (alias.test opens .3 again).
        let had = count(&d, "learned addresses restored after reload");
        std::fs::write(&pol, allow).expect("rewrite");
        settle(&d, had);
        // The replay counted may be the previous reload's, late under a
        // full suite (CI saw it): ask until the revert is in force, 10 s.
        let again = (0..20).any(|_| {
            let ok = dig_short(p, "alias.test").contains(&p.v4(3));
            if !ok {
                std::thread::sleep(Duration::from_millis(500));
            }
            ok
        });
        assert!(again, "control: alias.test not answered again");
        assert!(open(), "control: .3:7000 not open again");
    }
    drop(d);
    assert!(
        leaks.is_empty() && lost.is_empty(),
        ".3:7000 open after rounds {leaks:?}; big addresses lost {lost:?}"
    );
}

#[test]
fn escape_203_a_reload_that_gives_the_eighteenth_link_ports_replays_the_alias_on_every_port() {
    // Strict DNS mode, no denylist of names. long.test reaches evil.test
    // (.3) through 17 CNAMEs (evil.test the 18th link, past the kept
    // chain); alias.test through one. Both learned under `allowlist:
    // [alias.test, long.test]` (.3 on every port). A reload adds
    // `tcp/evil.test:7001`: the replay must not put .3 back on every port
    // for either (escape_180). Control: alias.test (one link) is not
    // replayed on 7000. Each name in its own run (one address).
    let mut found = Vec::new();
    for q in ["alias.test", "long.test"] {
        let w = crate::run::world_with(|two, three| {
            use hickory_proto::rr::RecordType;
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            z.records.push((
                "evil.test".into(),
                300,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(three)),
            ));
            z.records.push((
                "alias.test".into(),
                300,
                hickory_proto::rr::RData::CNAME(hickory_proto::rr::rdata::CNAME(rr::name("evil.test."))),
            ));
            let mut long = vec![rr::cname("long.test.", "l1.test.")];
            for i in 1..17 {
                long.push(rr::cname(&format!("l{i}.test."), &format!("l{}.test.", i + 1)));
            }
            long.push(rr::cname("l17.test.", "evil.test."));
            long.push(rr::a("evil.test.", three));
            z.raw.push(("long.test".into(), RecordType::A, vec![long]));
            z
        });
        let p = &w.p;
        let before = "allowlist:\n  domains: [\"alias.test\", \"long.test\"]\n";
        let after = "allowlist:\n  domains: [\"alias.test\", \"long.test\", \"tcp/evil.test:7001\"]\n";
        let pol = policy_file(&format!("escape-203-{q}"), before);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        assert!(dig_short(p, q).contains(&p.v4(3)), "control: {q} is not answered");
        assert!(on(7000), "control: {q}'s answer did not open .3:7000 under the first policy");
        std::fs::write(&pol, after).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let replayed = on(7000);
        eprintln!("{q}: .3:7000 after the reload: {replayed}");
        if q == "alias.test" {
            assert!(!replayed, "control: alias.test replayed on 7000 (escape_180 regressed)");
        } else if replayed {
            found.push(format!("{q}: .3:7000 replayed after the reload gave evil.test ports"));
        }
        drop(d);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_204_answers_in_flight_while_a_reload_denylists_the_address() {
    // Strict DNS mode, evil.test allowed (.3). A reload adds `denylist:
    // ips: [.3]` while the workload keeps asking evil.test: the learner
    // does not judge addresses against the denylist (escape_201 is the
    // guard); is an answer delivered under the old policy learned into
    // the new ruleset, and does the learned set then win over the denied
    // set? Up to five reload pairs.
    let w = cname_world();
    let p = &w.p;
    // (`default_action: allow`: a denylisted address under a default
    // deny is refused by the policy check as pointless.)
    let allow = "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n".to_string();
    let narrowed =
        format!("default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n  ips: [\"{}\"]\n", p.v4(3));
    let pol = policy_file("escape-204", &allow);
    let upstream = format!("{}:53", p.v4(2));
    let env =
        [("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_HARDENING", "false")];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000", "");
    // The answer is served either way (the address is refused at the
    // connection): reload_race's NXDOMAIN control does not apply.
    let to = s_addr(&p.v4(3), 7000);
    let open =
        || tcp(&p.work, to, vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT).text().contains("echo:");
    assert!(dig_short(p, "evil.test").contains(&p.v4(3)), "control: evil.test is not answered");
    assert!(open(), "control: .3:7000 is not open");
    let mut leaked = None;
    for round in 0..5 {
        let flood = DigFlood::start(p, "evil.test", 3, 20_000, "race-escape-204");
        std::thread::sleep(Duration::from_millis(700));
        std::fs::write(&pol, &narrowed).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
        drop(flood);
        if open() {
            leaked = Some(round);
            break;
        }
        std::fs::write(&pol, &allow).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        assert!(open(), "control: .3:7000 not open again");
    }
    std::fs::write(&pol, &narrowed).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let learned = set_count_prefixed(&p.work, "learned4", &p.v4(3));
    eprintln!("after the race: .3 in learned4: {learned}");
    drop(d);
    assert!(leaked.is_none(), "{}:7000 open after reload {leaked:?} denylisted the address", p.v4(3));
}

#[test]
fn escape_205_a_kept_alive_connection_that_switches_host_before_the_reload() {
    // HTTPS mode, default allow. On one kept-alive connection to .3:80:
    // request 1 names alias.test (a CNAME to evil.test at .3), request 2
    // a name with no chain at the same address (ok.test A .3; then, in a
    // second case, the IP literal), so the tracked name and chain are
    // request 2's. A reload denylists evil.test: the connection is not
    // cut (its tracked name is clean). Request 3 names alias.test again:
    // is it served? Control: requests 1 and 2 are.
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::RData;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("evil.test".into(), 300, RData::A(A(three))));
        z.records.push(("ok.test".into(), 300, RData::A(A(three))));
        z.records.push(("alias.test".into(), 300, RData::CNAME(CNAME(rr::name("evil.test.")))));
        z
    });
    let p = &w.p;
    let open = "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n";
    let pol = policy_file("escape-205", open);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let to = s_addr(&p.v4(3), 80);
    let mut found = Vec::new();
    for second in ["ok.test".to_string(), p.v4(3)] {
        std::fs::write(&pol, open).expect("rewrite");
        std::thread::sleep(Duration::from_millis(1500));
        let keep = |h: &str| format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
        let writer = {
            let pol = pol.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(800));
                std::fs::write(&pol, "default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n")
                    .expect("rewrite");
            })
        };
        let o = tcp(
            &p.work,
            to,
            vec![
                format!("{}{}", keep("alias.test"), keep(&second)).into_bytes(),
                get("alias.test").into_bytes(),
            ],
            Duration::from_millis(3000),
            Duration::from_secs(8),
        );
        writer.join().expect("writer");
        let answers = o.text().matches("hello from").count();
        eprintln!("second host {second}: {answers} answers");
        assert!(answers >= 2, "control: requests 1 and 2 were not served ({second}): {o:?}");
        if answers > 2 {
            found.push(format!("{second}: request 3 (alias.test) served after the reload"));
        }
    }
    let o = http(&p.work, to, &get("alias.test"));
    o.assert_not_served("control: alias.test on a new connection after the reload");
    drop(d);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn escape_206_many_addresses_opened_on_a_named_port_hold_the_learner_through_a_reload() {
    // escape_195 on the named-port path, which the chunked replay left
    // out: strict DNS mode, `*.big.test` allowed and `tcp/db.test:7001`.
    // The workload asks 250 names of its own zone, each a CNAME to db.test
    // with 2,400 distinct addresses: each answer opens them on TCP 7001
    // only, recorded under db.test in `named::Opened` (600,000 entries).
    // A reload (an unrelated change) replays `Opened` and installs its
    // elements in one lock hold. How long does a co-tenant's
    // `allowed.test` wait then (and while the answers are learned)?
    use hickory_proto::rr::RecordType;
    const NAMES: usize = 250;
    const PER: usize = 2_400;
    let w = crate::run::world_with(|two, _three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        for i in 0..NAMES {
            let owner = format!("b{i}.big.test.");
            let mut recs = vec![rr::cname(&owner, "db.test.")];
            recs.extend((0..PER).map(|j| {
                let n = u32::try_from(i * PER + j).expect("fits");
                rr::a("db.test.", std::net::Ipv4Addr::from(0x0a40_0000u32 + n))
            }));
            z.raw.push((format!("b{i}.big.test"), RecordType::A, vec![recs]));
        }
        z
    });
    let p = &w.p;
    let allow = "default_action: deny\nallowlist:\n  domains: [\"*.big.test\", \"allowed.test\", \"tcp/db.test:7001\"]\n";
    let pol = policy_file("escape-206", allow);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let dig = |name: &str, tcp: bool| {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args(["dig", &format!("@{}", p.v4(2)), name, "A", "+time=10", "+tries=1"]);
        if tcp {
            c.arg("+tcp");
        }
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        (out.contains("status: NOERROR"), start.elapsed(), out)
    };
    let (ok, base, out) = dig("allowed.test", false);
    assert!(ok, "control: allowed.test is not answered: {out}");
    let t = Instant::now();
    let mut learned = 0;
    let mut worst_learning = Duration::ZERO;
    for i in 0..NAMES {
        let (ok, _, out) = dig(&format!("b{i}.big.test"), true);
        learned += usize::from(ok && out.contains("ANSWER: 2401,"));
        if i == 0 {
            eprintln!("first big answer: {}", out.lines().take(12).collect::<Vec<_>>().join(" | "));
        }
        if i % 25 == 24 {
            let (_, took, _) = dig("allowed.test", false);
            worst_learning = worst_learning.max(took);
        }
    }
    let opened = set_count_prefixed(&p.work, "named_ports4", "10.6");
    eprintln!(
        "{learned} of {NAMES} big answers served in {:?}; baseline dig {base:?}; co-tenant worst while learning {worst_learning:?}; named_ports4 holds {opened}",
        t.elapsed()
    );
    assert!(learned > NAMES / 2, "control: the big answers were not served");
    // An unrelated change that adds no denylist of names.
    std::fs::write(&pol, allow.replace("\"allowed.test\"", "\"allowed.test\", \"other.test\""))
        .expect("rewrite");
    let written = Instant::now();
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    while written.elapsed() < Duration::from_secs(30) {
        let (ok, took, _) = dig("allowed.test", false);
        worst = worst.max(took);
        answered += usize::from(ok);
        let done = d.logged().iter().any(|l| l.contains("learned addresses restored after reload"));
        if done && written.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(120));
    let held = written.elapsed();
    eprintln!("reload done ({line}) within {held:?}; co-tenant digs: {answered} answered, worst {worst:?}");
    drop(d);
    assert!(
        worst < Duration::from_secs(2) && worst_learning < Duration::from_secs(2),
        "{} addresses opened on a named port: the co-tenant's DNS waited {worst:?} in the reload (took {held:?}), {worst_learning:?} while they were learned",
        learned * PER
    );
}

#[test]
fn escape_207_seventeen_aliases_of_a_name_with_ports_keep_its_replay() {
    // Strict DNS mode, `*.alias.test` allowed and `tcp/db.test:7001`;
    // a{i}.alias.test are CNAMEs to db.test (.3). Each answer opens
    // .3:7001 only, recorded in `named::Opened` under db.test with the
    // way there (question + chain) merged into db.test's chain: after 17
    // aliases that chain is over-long. A reload adds a denylist of an
    // unrelated name: is .3:7001 put back (still allowed: a fresh answer
    // opens it), or lost, refused whole as a chain past MAX_LINKS?
    // Control: one alias only, the same reload, .3:7001 is replayed.
    // (Availability, not a way through: what a co-tenant loses.)
    let mut lost = Vec::new();
    for n in [1usize, 17] {
        let w = crate::run::world_with(|two, three| {
            use hickory_proto::rr::rdata::{A, CNAME};
            use hickory_proto::rr::RData;
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            z.records.push(("db.test".into(), 300, RData::A(A(three))));
            for i in 0..17 {
                z.records.push((format!("a{i}.alias.test"), 300, RData::CNAME(CNAME(rr::name("db.test.")))));
            }
            z
        });
        let p = &w.p;
        let before =
            "default_action: deny\nallowlist:\n  domains: [\"*.alias.test\", \"tcp/db.test:7001\"]\n";
        let after = format!("{before}denylist:\n  domains: [\"other.test\"]\n");
        let pol = policy_file(&format!("escape-207-{n}"), before);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        for i in 0..n {
            assert!(
                dig_short(p, &format!("a{i}.alias.test")).contains(&p.v4(3)),
                "control: a{i} not answered"
            );
        }
        assert!(on(7001) && !on(7000), "control: the aliases did not open .3:7001 only ({n})");
        std::fs::write(&pol, &after).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let kept = on(7001);
        eprintln!("{n} aliases: {line}; .3:7001 after the reload: {kept}");
        if n == 1 {
            assert!(kept, "control: one alias's .3:7001 was not replayed");
        } else if !kept {
            lost.push(n);
        }
        drop(d);
    }
    assert!(
        lost.is_empty(),
        ".3:7001 lost after the reload with {lost:?} aliases merged into db.test's chain"
    );
}

#[test]
fn escape_208_the_guard_race_of_escape_201_on_the_named_port_path() {
    // escape_201 for a name with ports: `tcp/evil.test:7000` and
    // `allowlist.ips` listing .3 (GUARD_ADDRESSES=private); the reload
    // drops the ips entry while the workload keeps asking evil.test.
    // `named::elements` judges the guard under the policy in force: is
    // .3:7000 open after the reload?
    let w = cname_world();
    let p = &w.p;
    let allow = format!("allowlist:\n  ips: [\"{}/32\"]\n  domains: [\"tcp/evil.test:7000\"]\n", p.v4(3));
    let narrowed = "allowlist:\n  domains: [\"tcp/evil.test:7000\"]\n".to_string();
    let pol = policy_file("escape-208", &allow);
    let upstream = format!("{}:53", p.v4(2));
    let env = [
        ("FILTER_MODE", "dns-strict"),
        ("DNS_UPSTREAMS", upstream.as_str()),
        ("DNS_HARDENING", "false"),
        ("GUARD_ADDRESSES", "private"),
    ];
    let d = Daemon::start(&p.work, &pol, &env);
    let _echo = forbidden_echo(p, "7000", "");
    let leaked = reload_race(p, &d, &pol, (&allow, &narrowed), ("evil.test", 3, 20_000), 5);
    drop(d);
    assert!(
        leaked.is_none(),
        "{}:7000 open after reload {leaked:?} dropped the ips entry the guard needed",
        p.v4(3)
    );
}

#[test]
fn escape_213_a_reload_that_stops_allowing_the_question_closes_its_named_port_route() {
    // Round 13's `named::Route { name, asked }`: alias.test (allowed) is
    // a CNAME to db.test (`tcp/db.test:7001`) whose answer says db.test
    // is .3; db.test asked itself is .2. alias.test's answer opens .3 on
    // 7001 only, under the route (db.test, alias.test). A reload drops
    // alias.test from the allowlist (no denylist): the learned addresses
    // of a name no longer allowed are not replayed. Is the route's .3:7001
    // put back although no question the new policy allows leads to .3?
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, RecordType};
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("db.test".into(), 300, RData::A(A(two))));
        z.raw.push((
            "alias.test".into(),
            RecordType::A,
            vec![vec![rr::cname("alias.test.", "db.test."), rr::a("db.test.", three)]],
        ));
        z
    });
    let p = &w.p;
    let before = "default_action: deny\nallowlist:\n  domains: [\"alias.test\", \"tcp/db.test:7001\"]\n";
    let after = "default_action: deny\nallowlist:\n  domains: [\"tcp/db.test:7001\"]\n";
    let pol = policy_file("escape-213", before);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000,7001", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    assert!(!on(7001), "control: .3:7001 open before any answer");
    assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: alias.test not answered with .3");
    assert!(on(7001) && !on(7000), "control: alias.test's answer did not open .3:7001 only");
    std::fs::write(&pol, after).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let kept = on(7001);
    let direct = dig_short(p, "db.test");
    let refused = dig_short(p, "alias.test");
    eprintln!(
        "escape_213: {line}; .3:7001 after the reload: {kept}; db.test: {direct:?}; alias.test: {refused:?}"
    );
    assert!(!direct.contains(&p.v4(3)), "control: db.test itself answers .3");
    assert!(!refused.contains(&p.v4(3)), "control: alias.test still answered after the reload");
    drop(d);
    assert!(
        !kept,
        ".3:7001 put back after the reload although alias.test, the only question that led to .3, is no longer allowed"
    );
}

#[test]
fn escape_215_a_sixteen_link_chain_through_a_name_with_ports_keeps_its_replay() {
    // alias.test (allowed) → l1.test → … → db.test (`tcp/db.test:7001`,
    // .3): the answer's chain (the question left out) has `links` links,
    // at most MAX_LINKS = 16, so the answer opens .3:7001. The route keeps
    // the question and the chain (`via`): 1 + links. A reload with an
    // unrelated change: is .3:7001 put back for 16 links, as for 15
    // (control), or refused whole as "more than 16 links"?
    // (Availability: what a co-tenant loses at any reload.)
    use hickory_proto::rr::RecordType;
    let mut lost = Vec::new();
    for links in [15usize, 16] {
        let w = crate::run::world_with(move |two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            let mut recs = Vec::new();
            let mut from = "alias.test.".to_string();
            for i in 1..links {
                let to = format!("l{i}.test.");
                recs.push(rr::cname(&from, &to));
                from = to;
            }
            recs.push(rr::cname(&from, "db.test."));
            recs.push(rr::a("db.test.", three));
            z.raw.push(("alias.test".into(), RecordType::A, vec![recs]));
            z
        });
        let p = &w.p;
        let before = "default_action: deny\nallowlist:\n  domains: [\"alias.test\", \"tcp/db.test:7001\"]\n";
        let after = format!("{before}denylist:\n  domains: [\"other.test\"]\n");
        let pol = policy_file(&format!("escape-215-{links}"), before);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: alias.test not answered ({links})");
        assert!(on(7001) && !on(7000), "control: the answer did not open .3:7001 only ({links})");
        std::fs::write(&pol, &after).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let kept = on(7001);
        eprintln!("escape_215: {links} links: {line}; .3:7001 after the reload: {kept}");
        if links == 15 {
            assert!(kept, "control: a 15-link chain's .3:7001 was not replayed");
        } else if !kept {
            lost.push(links);
        }
        drop(d);
    }
    assert!(
        lost.is_empty(),
        ".3:7001 lost after the reload for a chain of {lost:?} links (the question counted as a link)"
    );
}

#[test]
fn escape_211_dns_over_tcp_on_ipv6_names_the_owner_and_keeps_the_share() {
    // Round 13: the DNS-over-TCP slot is taken in the accept loop after
    // the owner lookup. Over IPv6 (a redirected [v6]:53), is the owner
    // found (the lookup with the original destination), or does every
    // IPv6 client fall into one Unknown bucket, where a hog's 96
    // connections lock the others out?
    let s = setup("211", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let v6 = p.v6(3);
    // Control: an IPv6 DNS-over-TCP question is answered.
    let (out, _) = dig_tcp_as(&p.work, Priv::Nobody, &v6, "blocked.test");
    assert!(out.contains("status: NXDOMAIN"), "control: no IPv6 DNS-over-TCP answer: {out}");
    let hog = spawn_as(&p.work, Priv::User(1000), &["hold-tcp", &v6, "53", "130", "churn"]);
    let open = hog.line(Duration::from_secs(30)).unwrap_or_default();
    assert!(open.starts_with("open "), "{open}");
    std::thread::sleep(Duration::from_secs(1));
    for round in 0..10 {
        let (out, took) = dig_tcp_as(&p.work, Priv::Nobody, &v6, "blocked.test");
        assert!(out.contains("status: NXDOMAIN"), "round {round}: another IPv6 client got no answer: {out}");
        assert!(took < FAST, "round {round}: another IPv6 client waited {took:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ev = s.event_where(|e| e["msg"] == "dns.blocked" && e["reason"] == "limit");
    assert_eq!(ev["uid"], 1000, "the IPv6 limit event names the client: {ev}");
}

fn dig_udp_as(ns: &str, who: Priv, server: &str, name: &str) -> (String, Duration) {
    let mut c = as_workload(ns, who);
    c.args(["dig", &format!("@{server}"), name, "A", "+notcp", "+time=2", "+tries=1"]);
    let start = Instant::now();
    let (_, out, _) = util::run(c);
    (out, start.elapsed())
}

#[test]
fn escape_212_a_flood_of_reset_dns_tcp_connections_does_not_delay_udp_answers() {
    // Round 13: the DNS server's mio loop reads UDP queries and accepts
    // TCP, and the accept now does a sock_diag lookup, the fair
    // admission and (admitted) a thread spawn before the next event. A
    // client connecting and resetting at once (SO_LINGER 0) is looked up
    // after its socket is gone: Unknown, admitted, a thread each. Do a
    // co-tenant's UDP answers wait?
    let s = setup("212", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let server = p.v4(3);
    let mut base = Vec::new();
    for _ in 0..5 {
        let (out, took) = dig_udp_as(&p.work, Priv::Nobody, &server, "blocked.test");
        assert!(out.contains("status: NXDOMAIN"), "control: {out}");
        base.push(took);
    }
    eprintln!("escape_212: UDP answers before the flood: {base:?}");
    let flood = spawn_as(&p.work, Priv::User(1000), &["rst-flood", &server, "53", "6", "25"]);
    std::thread::sleep(Duration::from_secs(2));
    let mut slow = Vec::new();
    let mut took_all = Vec::new();
    for round in 0..30 {
        let (out, took) = dig_udp_as(&p.work, Priv::Nobody, &server, "blocked.test");
        took_all.push(took);
        if !out.contains("status: NXDOMAIN") || took >= FAST {
            slow.push((round, took, out.contains("status: NXDOMAIN")));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let done = flood.line(Duration::from_secs(40)).unwrap_or_default();
    eprintln!("escape_212: flood {done}; UDP answers during it: {took_all:?}");
    assert!(slow.is_empty(), "UDP answers waited or failed under the TCP reset flood: {slow:?}");
}

#[test]
fn escape_214_a_reload_that_denylists_a_name_with_ports_itself_closes_its_ports() {
    // `tcp/db.test:7001` (db.test is .3, no CNAME: an empty chain). A
    // reload keeps the entry but denylists db.test: a fresh question is
    // refused. The route (db.test, db.test) has no chain for `denied_in`
    // to judge, and `named::elements` reads `ports_of_name`: is .3:7001
    // put back under a policy that denylists the name?
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::RData;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("db.test".into(), 300, RData::A(A(three))));
        z
    });
    let p = &w.p;
    let before = "default_action: deny\nallowlist:\n  domains: [\"tcp/db.test:7001\"]\n";
    let after = format!("{before}denylist:\n  domains: [\"db.test\"]\n");
    let pol = policy_file("escape-214", before);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000,7001", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    assert!(!on(7001), "control: .3:7001 open before any answer");
    assert!(dig_short(p, "db.test").contains(&p.v4(3)), "control: db.test not answered with .3");
    assert!(on(7001) && !on(7000), "control: db.test's answer did not open .3:7001 only");
    std::fs::write(&pol, &after).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let kept = on(7001);
    let fresh = dig_short(p, "db.test");
    eprintln!("escape_214: {line}; .3:7001 after the reload: {kept}; db.test now: {fresh:?}");
    assert!(!fresh.contains(&p.v4(3)), "control: the denylisted db.test still answered");
    drop(d);
    assert!(!kept, ".3:7001 put back after a reload that denylists db.test");
}

#[test]
#[ignore = "round-13 finding (delay, not a way through): one uid's connect-and-reset flood (~7,000/s) overflows the proxy's listen queue, shared by every client, so another client's SYN is dropped and retried after 1 s (3 of 5 runs on a loaded machine, 0 of 2 unloaded; the same with the accept loop of before round 13); needs a per-owner limit on new connections before the listen queue"]
fn escape_216_a_flood_of_reset_proxy_connections_does_not_delay_another_clients_requests() {
    // escape_212 on the HTTP proxy: its accept loop now does the owner
    // lookup and the fair admission before it hands a connection on. A
    // client connecting and resetting at once (looked up after its socket
    // is gone: Unknown) from six processes: do a co-tenant's requests
    // wait or fail?
    let s = setup("216", ALLOWED, &[("MAX_CONNECTIONS", "100")]);
    let p = s.p();
    let resolve = format!("allowed.test:80:{}", p.v4(2));
    let get = || {
        let mut c = as_workload(&p.work, Priv::Nobody);
        c.args([
            "curl",
            "-s",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            "--resolve",
            &resolve,
            "http://allowed.test/",
        ]);
        let start = Instant::now();
        let (_, out, _) = util::run(c);
        (out.ends_with("200"), start.elapsed())
    };
    let base: Vec<_> = (0..3).map(|_| get()).collect();
    assert!(base.iter().all(|(ok, _)| *ok), "control: {base:?}");
    // The same flood at egret's DNS-over-TCP port (another loop, the same
    // CPU burnt on this 2-core machine), then at the proxy.
    let drops = || {
        let mut c = Pair::exec(&p.work, "cat");
        c.arg("/proc/net/netstat");
        let (_, out, _) = util::run(c);
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("TcpExt:")).collect();
        let (Some(names), Some(vals)) = (lines.first(), lines.get(1)) else { return (0, 0) };
        let get = |want: &str| {
            names
                .split_whitespace()
                .zip(vals.split_whitespace())
                .find(|(n, _)| *n == want)
                .map_or(0u64, |(_, v)| v.parse().unwrap_or(0))
        };
        (get("ListenOverflows"), get("ListenDrops"))
    };
    let mut phases = Vec::new();
    for (target, port) in [(p.v4(3), "53"), (p.v4(2), "80")] {
        let before = drops();
        let flood = spawn_as(&p.work, Priv::User(1000), &["rst-flood", &target, port, "6", "15"]);
        std::thread::sleep(Duration::from_secs(2));
        let mut bad = Vec::new();
        let mut all = Vec::new();
        for round in 0..20 {
            let (ok, took) = get();
            all.push(took);
            if !ok || took >= FAST {
                bad.push((round, ok, took));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let done = flood.line(Duration::from_secs(40)).unwrap_or_default();
        all.sort();
        let after = drops();
        eprintln!("escape_216: flood at {port}: {done}; listen overflows/drops {before:?} -> {after:?}; requests during it (sorted): {all:?}");
        phases.push((port, bad));
    }
    eprintln!("escape_216: base {base:?}");
    let bad = phases.pop().map(|(_, b)| b).unwrap_or_default();
    assert!(bad.is_empty(), "another client's requests waited or failed under the reset flood: {bad:?}");
}

#[test]
fn escape_217_a_flood_of_reset_dns_tcp_connections_does_not_delay_another_clients_tcp_answers() {
    // escape_212's flood (connect, RST at once, from six processes: each
    // looked up after its socket is gone, Unknown, admitted, a thread
    // spawned in the accept loop) against a co-tenant's DNS over TCP: the
    // accept loop is the bottleneck, does the co-tenant's connection wait
    // in (or drop from) the backlog?
    let s = setup("217", ALLOWED, &[("FILTER_MODE", "dns")]);
    let p = s.p();
    let server = p.v4(3);
    for _ in 0..3 {
        let (out, took) = dig_tcp_as(&p.work, Priv::Nobody, &server, "blocked.test");
        assert!(out.contains("status: NXDOMAIN") && took < FAST, "control: {took:?} {out}");
    }
    let flood = spawn_as(&p.work, Priv::User(1000), &["rst-flood", &server, "53", "6", "20"]);
    std::thread::sleep(Duration::from_secs(2));
    let mut bad = Vec::new();
    let mut all = Vec::new();
    for round in 0..20 {
        let (out, took) = dig_tcp_as(&p.work, Priv::Nobody, &server, "blocked.test");
        all.push(took);
        if !out.contains("status: NXDOMAIN") || took >= FAST {
            bad.push((round, took, out.contains("status: NXDOMAIN")));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let done = flood.line(Duration::from_secs(40)).unwrap_or_default();
    all.sort();
    eprintln!("escape_217: flood {done}; TCP answers during it (sorted): {all:?}");
    assert!(
        bad.is_empty(),
        "another client's DNS-over-TCP answers waited or failed under the reset flood: {bad:?}"
    );
}

#[test]
fn escape_220_rotating_chains_of_one_alias_do_not_lose_its_named_port_route_at_a_reload() {
    // Round 14 on round 13's per-way chains: alias.test (allowed) is a
    // CNAME chain to db.test (`tcp/db.test:7001`, .3) through eight CDN
    // links that change between answers (a1..a8 the first time, b1..b8
    // the next, as CDNs rotate). Each answer has 9 links, well within
    // MAX_LINKS = 16, and each opens .3:7001. The way (db.test,
    // alias.test) merges its answers' links: 17. A reload with an
    // unrelated change: is .3:7001 put back after two answers as after
    // one (control), or refused whole as "more than 16 links"?
    // (Availability: what a co-tenant loses at any reload.)
    use hickory_proto::rr::RecordType;
    let mut lost = Vec::new();
    for asks in [1usize, 2] {
        let w = crate::run::world_with(move |two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            let mut answers = Vec::new();
            for tag in ["a", "b"] {
                let mut recs = Vec::new();
                let mut from = "alias.test.".to_string();
                for i in 1..=8 {
                    let to = format!("{tag}{i}.cdn.test.");
                    recs.push(rr::cname(&from, &to));
                    from = to;
                }
                recs.push(rr::cname(&from, "db.test."));
                recs.push(rr::a("db.test.", three));
                answers.push(recs);
            }
            z.raw.push(("alias.test".into(), RecordType::A, answers));
            z
        });
        let p = &w.p;
        let before = "default_action: deny\nallowlist:\n  domains: [\"alias.test\", \"tcp/db.test:7001\"]\n";
        let after = format!("{before}denylist:\n  domains: [\"other.test\"]\n");
        let pol = policy_file(&format!("escape-220-{asks}"), before);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        for n in 0..asks {
            assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: answer {n} not .3 ({asks})");
        }
        assert!(on(7001) && !on(7000), "control: the answers did not open .3:7001 only ({asks})");
        std::fs::write(&pol, &after).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let kept = on(7001);
        eprintln!("escape_220: {asks} answer(s): {line}; .3:7001 after the reload: {kept}");
        if asks == 1 {
            assert!(kept, "control: one 9-link answer's .3:7001 was not replayed");
        } else if !kept {
            lost.push(asks);
        }
        drop(d);
    }
    assert!(
        lost.is_empty(),
        ".3:7001 lost after the reload once alias.test was answered {lost:?} times through different 9-link chains (the way's merged links counted as one chain past MAX_LINKS)"
    );
}

/// The rounds of escape_221/232: alias.test (allowed, strict DNS mode)
/// answered through one 9-link chain per tag (`{tag}1..8.cdn.test` then
/// target.test, .3), asked once, then once per tag; a reload adding an
/// unrelated denylist of names. Asserts the one-answer control and
/// returns the answer counts after which .3 was not put back.
fn rotating_chains_lost(test: &str, tags: &'static [&'static str]) -> Vec<usize> {
    use hickory_proto::rr::RecordType;
    let mut lost = Vec::new();
    for asks in [1usize, tags.len()] {
        let w = crate::run::world_with(move |two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            let mut answers = Vec::new();
            for tag in tags {
                let mut recs = Vec::new();
                let mut from = "alias.test.".to_string();
                for i in 1..=8 {
                    let to = format!("{tag}{i}.cdn.test.");
                    recs.push(rr::cname(&from, &to));
                    from = to;
                }
                recs.push(rr::cname(&from, "target.test."));
                recs.push(rr::a("target.test.", three));
                answers.push(recs);
            }
            z.raw.push(("alias.test".into(), RecordType::A, answers));
            z
        });
        let p = &w.p;
        let before = "default_action: deny\nallowlist:\n  domains: [\"alias.test\"]\n";
        let after = format!("{before}denylist:\n  domains: [\"other.test\"]\n");
        let pol = policy_file(&format!("{test}-{asks}"), before);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000", "");
        let on = || {
            tcp(&p.work, s_addr(&p.v4(3), 7000), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        assert!(!on(), "control: .3 open before any answer ({asks})");
        for n in 0..asks {
            assert!(dig_short(p, "alias.test").contains(&p.v4(3)), "control: answer {n} not .3 ({asks})");
        }
        assert!(on(), "control: the answers did not open .3 ({asks})");
        std::fs::write(&pol, &after).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let kept = on();
        eprintln!("{test}: {asks} answer(s): {line}; .3 after the reload: {kept}");
        if asks == 1 {
            assert!(kept, "control: one 9-link answer's .3 was not replayed");
        } else if !kept {
            lost.push(asks);
        }
        drop(d);
    }
    lost
}

#[test]
fn escape_221_rotating_chains_of_one_allowed_alias_do_not_lose_its_addresses_at_a_reload() {
    // escape_220 without names with ports: alias.test (allowed) is a
    // CNAME chain to target.test (.3, no entry of its own) through eight
    // CDN links that change between answers (a1..a8, then b1..b8): 9
    // links each, within MAX_LINKS. strict DNS mode learns .3 for
    // alias.test, whose `Chains` entry merges the links: 17. A reload
    // that adds a denylist of names (other.test, unrelated): is .3 put
    // back after two answers as after one (control)?
    let lost = rotating_chains_lost("escape-221", &["a", "b"]);
    assert!(
        lost.is_empty(),
        ".3 lost after the reload once alias.test was answered {lost:?} times through different 9-link chains (its merged links counted as one chain past MAX_LINKS)"
    );
}

#[test]
fn escape_222_a_reload_that_stops_a_pattern_allowing_the_question_closes_its_named_port_way() {
    // Round 13's fix judges a way through an alias by its question
    // (`decide(asked)`). The question a1.alias.test is asked as
    // `A1.Alias.TEST.` (case, trailing dot) and allowed only by a
    // pattern: a wildcard, a regex, or a wildcard the reload keeps but
    // under a denylist glob that matches the question alone. It is a
    // CNAME to db.test (`tcp/db.test:7001`) whose answer says .3 (db.test
    // asked itself is .2). After each reload: is .3:7001 put back though
    // the new policy refuses the question?
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, RecordType};
    let wild = "default_action: deny\nallowlist:\n  domains: [\"*.alias.test\", \"tcp/db.test:7001\"]\n";
    let regex =
        "default_action: deny\nallowlist:\n  domains: [\"/a[0-9]+\\\\.alias\\\\.test/\", \"tcp/db.test:7001\"]\n";
    let cases: [(&str, String, String); 3] = [
        ("wildcard moved", wild.into(), wild.replace("*.alias.test", "*.other.test")),
        ("regex changed", regex.into(), regex.replace("a[0-9]", "b[0-9]")),
        ("denylist glob", wild.into(), format!("{wild}denylist:\n  domains: [\"a*.alias.test\"]\n")),
    ];
    let mut kept_any = Vec::new();
    for (i, (what, before, after)) in cases.iter().enumerate() {
        let w = crate::run::world_with(|two, three| {
            let mut z = crate::dnsauth::Zone::standard(two, 300);
            z.records.push(("db.test".into(), 300, RData::A(A(two))));
            z.raw.push((
                "a1.alias.test".into(),
                RecordType::A,
                vec![vec![rr::cname("a1.alias.test.", "db.test."), rr::a("db.test.", three)]],
            ));
            z
        });
        let p = &w.p;
        let pol = policy_file(&format!("escape-222-{i}"), before);
        let upstream = format!("{}:53", p.v4(2));
        let d = Daemon::start(
            &p.work,
            &pol,
            &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())],
        );
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        assert!(!on(7001), "control ({what}): .3:7001 open before any answer");
        let first = dig_short(p, "A1.Alias.TEST.");
        assert!(first.contains(&p.v4(3)), "control ({what}): the question not answered with .3: {first:?}");
        assert!(on(7001) && !on(7000), "control ({what}): the answer did not open .3:7001 only");
        std::fs::write(&pol, after).expect("rewrite policy");
        d.wait_log("policy reloaded", Duration::from_secs(10));
        let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
        let kept = on(7001);
        let refused = dig_short(p, "a1.alias.test");
        eprintln!(
            "escape_222: {what}: {line}; .3:7001 after the reload: {kept}; a1.alias.test now: {refused:?}"
        );
        assert!(
            !refused.contains(&p.v4(3)),
            "control ({what}): the question still answered after the reload"
        );
        if kept {
            kept_any.push(*what);
        }
        drop(d);
    }
    assert!(kept_any.is_empty(), ".3:7001 put back after reloads that refuse the question: {kept_any:?}");
}

#[test]
fn escape_223_a_second_question_hides_a_name_with_ports_from_the_chain() {
    // `answer_chain` leaves out every question asked (`asked` is all of
    // them), while `learn_answer` learns the whole answer under the first
    // question alone. One query with two questions, alias.test (allowed
    // on every port) and db.test (`tcp/db.test:7001`, forwarded for its
    // ports): the upstream's answer says db.test is .3. db.test, the
    // owner of .3's record, is a question, so not a link: is .3 learned
    // under alias.test on every port (.3:7000 open)?
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, RecordType};
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.echo_questions = true;
        z.records.push(("db.test".into(), 300, RData::A(A(two))));
        z.raw.push((
            "alias.test".into(),
            RecordType::A,
            vec![vec![rr::a("alias.test.", two), rr::a("db.test.", three)]],
        ));
        z
    });
    let p = &w.p;
    let pol = policy_file(
        "escape-223",
        "default_action: deny\nallowlist:\n  domains: [\"alias.test\", \"tcp/db.test:7001\"]\n",
    );
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000,7001", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    assert!(!on(7000) && !on(7001), "control: .3 open before any answer");
    // Control: one question. db.test (the record's owner) is a link with
    // ports: .3 opens on 7001 only.
    let one = dig_short(p, "alias.test");
    assert!(one.contains(&p.v4(3)), "control: alias.test not answered with .3: {one:?}");
    assert!(on(7001) && !on(7000), "control: the one-question answer did not open .3:7001 only");
    // The attack: both names in one query, as nobody.
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args([py3(), &util::public("netns/attack.py"), "dns-multi", &p.v4(2), "alias.test", "db.test"]);
    let (_, out, err) = util::run(c);
    eprintln!("escape_223: two questions: {out} {err}");
    let wide = on(7000);
    eprintln!("escape_223: .3:7000 after the two-question answer: {wide}");
    drop(d);
    assert!(
        !wide,
        ".3 opened on every port: db.test's answer learned under alias.test via a second question ({out})"
    );
}

#[test]
fn escape_224_a_question_allowed_only_on_some_ports_keeps_no_way_after_a_reload_drops_it() {
    // The question itself a name with ports (`tcp/alias.test:7000`), a
    // CNAME to db.test (`tcp/db.test:7001`) whose answer says .3. The
    // question's way (alias.test, alias.test) skips the "question still
    // allowed?" check (asked == name) and keeps the chain [db.test]. A
    // reload drops alias.test's entry, keeping db.test's: is anything of
    // .3 (7000 by the alias's way, or 7001 by its link) put back?
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, RecordType};
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("db.test".into(), 300, RData::A(A(two))));
        z.raw.push((
            "alias.test".into(),
            RecordType::A,
            vec![vec![rr::cname("alias.test.", "db.test."), rr::a("db.test.", three)]],
        ));
        z
    });
    let p = &w.p;
    let before =
        "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\", \"tcp/db.test:7001\"]\n";
    let after = "default_action: deny\nallowlist:\n  domains: [\"tcp/db.test:7001\"]\n";
    let pol = policy_file("escape-224", before);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000,7001,7002", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    assert!(!on(7000) && !on(7001), "control: .3 open before any answer");
    assert!(dig_short(p, "ALIAS.test.").contains(&p.v4(3)), "control: alias.test not answered with .3");
    let opened = (on(7000), on(7001), on(7002));
    eprintln!("escape_224: after alias.test's answer .3 on 7000/7001/7002: {opened:?}");
    assert!(opened.0 && !opened.2, "control: alias.test's answer did not open .3:7000 (and not 7002)");
    std::fs::write(&pol, after).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let kept = (on(7000), on(7001), on(7002));
    let refused = dig_short(p, "alias.test");
    eprintln!(
        "escape_224: {line}; .3 on 7000/7001/7002 after the reload: {kept:?}; alias.test now: {refused:?}"
    );
    assert!(!refused.contains(&p.v4(3)), "control: alias.test still answered after the reload");
    drop(d);
    assert_eq!(kept, (false, false, false), ".3 put back after the reload dropped alias.test's entry");
}

#[test]
fn escape_225_a_second_questions_widened_address_is_not_replayed_on_every_port() {
    // escape_223's two-question answer, then a reload (an unrelated
    // denylist entry): `Learned::still_allowed` judges alias.test's chain,
    // which is empty (db.test was a question, not a link), so
    // `port_links` finds nothing. Is .3 put back on every port?
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, RecordType};
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.echo_questions = true;
        z.records.push(("db.test".into(), 300, RData::A(A(two))));
        z.raw.push((
            "alias.test".into(),
            RecordType::A,
            vec![vec![rr::cname("alias.test.", "db.test."), rr::a("db.test.", three)]],
        ));
        z
    });
    let p = &w.p;
    let before = "default_action: deny\nallowlist:\n  domains: [\"alias.test\", \"tcp/db.test:7001\"]\n";
    let after = format!("{before}denylist:\n  domains: [\"other.test\"]\n");
    let pol = policy_file("escape-225", before);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000,7001", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    assert!(!on(7000) && !on(7001), "control: .3 open before any answer");
    let mut c = as_workload(&p.work, Priv::Nobody);
    c.args([py3(), &util::public("netns/attack.py"), "dns-multi", &p.v4(2), "alias.test", "db.test"]);
    let (_, out, err) = util::run(c);
    eprintln!("escape_225: two questions (alias.test CNAME db.test): {out} {err}");
    let before_reload = on(7000);
    std::fs::write(&pol, &after).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let kept = on(7000);
    eprintln!("escape_225: .3:7000 before the reload {before_reload}; {line}; after: {kept}");
    drop(d);
    assert!(
        !before_reload && !kept,
        ".3:7000 open through the two-question answer (before {before_reload}, after the reload {kept})"
    );
}

#[test]
fn escape_226_a_dname_that_moves_the_question_to_a_name_with_ports_opens_its_ports_only() {
    // The question x.alias.test (allowed by `*.alias.test`) answered by a
    // DNAME alias.test → db.test (`tcp/x.db.test:7001`, the name the
    // DNAME moves the question to), the synthesised CNAME x.alias.test →
    // x.db.test and x.db.test's .3. Does the answer open .3 on every
    // port (the moved name missed as a link), and does a reload that no
    // longer allows the question put .3:7001 back?
    use hickory_proto::rr::RecordType;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.raw.push((
            "x.alias.test".into(),
            RecordType::A,
            vec![vec![
                rr::dname("alias.test.", "db.test."),
                rr::cname("x.alias.test.", "x.db.test."),
                rr::a("x.db.test.", three),
            ]],
        ));
        z
    });
    let p = &w.p;
    let before = "default_action: deny\nallowlist:\n  domains: [\"*.alias.test\", \"tcp/x.db.test:7001\"]\n";
    let after = "default_action: deny\nallowlist:\n  domains: [\"tcp/x.db.test:7001\"]\n";
    let pol = policy_file("escape-226", before);
    let upstream = format!("{}:53", p.v4(2));
    let d =
        Daemon::start(&p.work, &pol, &[("FILTER_MODE", "dns-strict"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let _echo = forbidden_echo(p, "7000,7001", "");
    let on = |port| {
        tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
            .text()
            .contains("echo:")
    };
    assert!(!on(7000) && !on(7001), "control: .3 open before any answer");
    let got = dig_short(p, "x.alias.test");
    assert!(got.contains(&p.v4(3)), "control: x.alias.test not answered with .3: {got:?}");
    let opened = (on(7000), on(7001));
    std::fs::write(&pol, after).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    let line = d.wait_logged("learned addresses restored after reload", Duration::from_secs(10));
    let kept = (on(7000), on(7001));
    eprintln!("escape_226: .3 on 7000/7001 after the answer {opened:?}; {line}; after the reload {kept:?}");
    drop(d);
    assert!(opened.1, "control: the answer did not open .3:7001");
    assert!(!opened.0, ".3:7000 opened: the DNAME-moved name with ports was not a link");
    assert_eq!(kept, (false, false), ".3 put back after the reload that no longer allows x.alias.test");
}

/// A world where `name` answers A through `alias -> a1..a8.cdn.test ->
/// target.test` (A .3) and AAAA through `alias -> {tag}1..{tag}8.cdn.test
/// -> target.test` (no AAAA): each answer 9 links, within MAX_LINKS.
fn split_chain_world(name: &'static str, tag: &'static str) -> World {
    use hickory_proto::rr::RecordType;
    crate::run::world_with(move |two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        for (t, qt) in [("a", RecordType::A), (tag, RecordType::AAAA)] {
            let mut recs = Vec::new();
            let mut from = format!("{name}.");
            for i in 1..=8 {
                let to = format!("{t}{i}.cdn.test.");
                recs.push(rr::cname(&from, &to));
                from = to;
            }
            recs.push(rr::cname(&from, "target.test."));
            if qt == RecordType::A {
                recs.push(rr::a("target.test.", three));
            }
            z.raw.push((name.into(), qt, vec![recs]));
        }
        z
    })
}

#[test]
fn escape_230_https_mode_a_name_with_ports_whose_a_and_aaaa_chains_differ_is_opened() {
    // HTTPS mode's refresher (`resolve/named.rs`) resolves db.test
    // (`tcp/db.test:7001`) for A and AAAA and judges the union of both
    // answers' links with `denied_in` (bound 16). A CNAME chain of 9 links
    // for A and another 9 for AAAA (a CDN with separate v4/v6 paths): is
    // .3:7001 opened as when both answers share their links (control)?
    let mut lost = Vec::new();
    for tag in ["a", "b"] {
        let w = split_chain_world("db.test", tag);
        let p = &w.p;
        let pol = policy_file(
            &format!("escape-230-{tag}"),
            "default_action: deny\nallowlist:\n  domains: [\"tcp/db.test:7001\"]\n",
        );
        let upstream = format!("{}:53", p.v4(2));
        let d =
            Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
        let _echo = forbidden_echo(p, "7000,7001", "");
        let on = |port| {
            tcp(&p.work, s_addr(&p.v4(3), port), vec![b"x\n".to_vec()], Duration::ZERO, CLIENT_TIMEOUT)
                .text()
                .contains("echo:")
        };
        let mut open = false;
        for _ in 0..20 {
            if on(7001) {
                open = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let said: Vec<String> = d.logged().into_iter().filter(|l| l.contains("db.test")).collect();
        eprintln!("escape_230 {tag}: .3:7001 open: {open}; {said:?}");
        assert!(!on(7000), "{tag}: .3:7000 open (not a port of db.test)");
        if tag == "a" {
            assert!(open, "control: db.test's shared-link answers did not open .3:7001");
        } else if !open {
            lost.push(said);
        }
        drop(d);
    }
    assert!(
        lost.is_empty(),
        "db.test not opened when its A and AAAA answers (9 links each) led through different links: {lost:?}"
    );
}

#[test]
fn escape_231_https_mode_check_cache_an_alias_whose_a_and_aaaa_chains_differ_is_served() {
    // The proxies' check lookup (`resolve::ask_answer`) merges the A and
    // AAAA answers' links into one chain, which `Cache::chained` records
    // with `merge_links`: 18 links read as one answer past 16, marked
    // over-long, so under any denylist of names the alias is refused.
    // Control: both answers through the same links.
    let mut lost = Vec::new();
    for tag in ["a", "b"] {
        let w = split_chain_world("alias.test", tag);
        let p = &w.p;
        let pol = policy_file(
            &format!("escape-231-{tag}"),
            "default_action: allow\ndenylist:\n  domains: [\"other.test\"]\n",
        );
        let upstream = format!("{}:53", p.v4(2));
        let d =
            Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
        let o = http(&p.work, s_addr(&p.v4(3), 80), &get("alias.test"));
        let served = o.text().contains("hello from");
        eprintln!("escape_231 {tag}: served {served}: {:?}", o.text());
        if tag == "a" {
            assert!(served, "control: alias.test through shared links not served: {o:?}");
        } else if !served {
            lost.push(o.text());
        }
        drop(d);
    }
    assert!(
        lost.is_empty(),
        "alias.test refused when its A and AAAA answers (9 links each) led through different links: {lost:?}"
    );
}

#[test]
#[ignore = "round-15 finding (availability, not a way through): the links kept for a name only grow while it stays live, so a CDN rotating 9-link chains 8 times within a TTL passes the 64 kept links and a reload under a denylist of names refuses the name whole; needs links kept per live answer"]
fn escape_232_a_cdn_rotating_its_links_eight_times_keeps_its_address_at_a_reload() {
    // escape_221 with more answers: round 14 raised the kept bound to 64
    // links, but kept links are never forgotten while the name lives. A
    // CDN that rotates 8 links per answer (9 links each, a..h) answers 8
    // times within the TTL: 72 links kept, past 64, refused whole at a
    // reload that adds an unrelated denylist (other.test). Control: 1
    // answer. (Availability: a co-tenant's busy CDN name lost at reloads.)
    let lost = rotating_chains_lost("escape-232", &["a", "b", "c", "d", "e", "f", "g", "h"]);
    assert!(
        lost.is_empty(),
        ".3 lost after the reload once alias.test was answered {lost:?} times through different 9-link chains (72 kept links, past MAX_KEPT = 64, though no answer was past 16)"
    );
}

#[test]
fn escape_233_https_mode_a_name_with_ports_is_not_served_over_the_http_proxy_on_port_80() {
    // HTTPS mode with `DNS_IN_HTTPS_MODE=true`: db.test has ports only
    // (`tcp/db.test:7001`) and answers .3; web.test (allowed) answers .3
    // too. The workload asks egret's listener for db.test (forwarded for
    // its ports; the answer goes into the check cache), then sends
    // `Host: db.test` to .3:80. Control: `Host: web.test` is served.
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::RData;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("db.test".into(), 300, RData::A(A(three))));
        z.records.push(("web.test".into(), 300, RData::A(A(three))));
        z
    });
    let p = &w.p;
    let pol = policy_file(
        "escape-233",
        "default_action: deny\nallowlist:\n  domains: [\"web.test\", \"tcp/db.test:7001\"]\n",
    );
    let upstream = format!("{}:53", p.v4(2));
    let env = [("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str()), ("DNS_IN_HTTPS_MODE", "true")];
    let d = Daemon::start(&p.work, &pol, &env);
    let a = dig_short(p, "db.test");
    assert!(a.contains(&p.v4(3)), "control: the listener does not answer db.test: {a}");
    let web = http(&p.work, s_addr(&p.v4(3), 80), &get("web.test"));
    assert!(web.text().contains("hello from"), "control: web.test not served: {web:?}");
    let db = http(&p.work, s_addr(&p.v4(3), 80), &get("db.test"));
    eprintln!("escape_233: Host db.test on .3:80: {:?}", db.text());
    drop(d);
    assert!(
        !db.text().contains("hello from"),
        "Host: db.test (ports 7001 only) served on .3:80: {}",
        db.text()
    );
}

#[test]
#[ignore = "round-15 finding (consistency, not past a denylist): in HTTPS mode an allowed alias that CNAMEs to a name with ports is served on 80/443, where strict DNS mode opens the name-with-ports' ports only"]
fn escape_234_https_mode_an_alias_through_a_name_with_ports_is_judged_as_in_dns_mode() {
    // Strict DNS mode opens an answer that led through a name with ports
    // (alias.test CNAME db.test, `tcp/db.test:7001`) on that name's ports
    // only (round 10, escape_180). HTTPS mode's check: `Host: alias.test`
    // to .3:80, where the check lookup of alias.test leads through
    // db.test to .3. Control: `Host: web.test` (allowed, A .3) is served.
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::RData;
    let w = crate::run::world_with(|two, three| {
        let mut z = crate::dnsauth::Zone::standard(two, 300);
        z.records.push(("web.test".into(), 300, RData::A(A(three))));
        z.raw.push((
            "alias.test".into(),
            hickory_proto::rr::RecordType::A,
            vec![vec![rr::cname("alias.test.", "db.test."), rr::a("db.test.", three)]],
        ));
        z
    });
    let p = &w.p;
    let pol = policy_file(
        "escape-234",
        "default_action: deny\nallowlist:\n  domains: [\"web.test\", \"alias.test\", \"tcp/db.test:7001\"]\n",
    );
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("FILTER_MODE", "https"), ("DNS_UPSTREAMS", upstream.as_str())]);
    let web = http(&p.work, s_addr(&p.v4(3), 80), &get("web.test"));
    assert!(web.text().contains("hello from"), "control: web.test not served: {web:?}");
    let via = http(&p.work, s_addr(&p.v4(3), 80), &get("alias.test"));
    eprintln!("escape_234: Host alias.test on .3:80: {:?}", via.text());
    drop(d);
    assert!(
        !via.text().contains("hello from"),
        "Host: alias.test served on .3:80 though its answer led through db.test (ports 7001 only): {}",
        via.text()
    );
}
