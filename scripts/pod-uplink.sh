#!/usr/bin/env bash
# Gives a running pod (created with --network none) an uplink to a stand-in
# "internet": a new network namespace UPNS joined to the pod's infra
# network namespace by a veth pair, and a container there serving HTTP.
#
#   scripts/pod-uplink.sh POD [UPNS [IMAGE]]   (UPNS default POD-up; POD may
#                                              also be a container on --network none)
#   scripts/pod-uplink.sh --down POD [UPNS]
#
# Pods cannot join a named network namespace (podman: "pods presently do
# not support network mode path"), so the veth end is moved into the infra
# container's namespace instead. Addresses (private, inside the pair only):
#   pod  eth0 10.200.0.1/24, fd00:200::1/64, default route via 10.200.0.2
#   UPNS eth0 10.200.0.2 ("github.com" in the examples), 10.200.0.3
#        ("example.com"), 192.168.77.7, fd00:200::2
# POD-upstream (busybox httpd -vv, requests logged) serves "hello from
# upstream" on :80 and :9000 of all of them, and dnsmasq (a host process
# in UPNS) answers DNS on 10.200.0.2:53: github.com -> 10.200.0.2,
# example.com -> 10.200.0.3. egret in the pod uses it as DNS_UPSTREAMS
# (the HTTPS proxies check that an allowed name resolves to the address
# the workload connects to).
#
# With `podman play kube`:
#   podman play kube --network none --start=false deploy/pod.yaml
#   podman start "$(podman pod inspect egret --format '{{.InfraContainerID}}')"
#   scripts/pod-uplink.sh egret
#   podman pod start egret
set -euo pipefail

if [ "${1:-}" = --down ]; then
  pod=${2:?usage: pod-uplink.sh --down POD [UPNS]}
  upns=${3:-$pod-up}
  podman rm -f -t 0 "$pod-upstream" >/dev/null 2>&1 || true
  pidfile=/run/egret-pod/$upns-dnsmasq.pid
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  ip netns del "$upns" 2>/dev/null || true
  exit 0
fi
pod=${1:?usage: pod-uplink.sh POD [UPNS [IMAGE]]}
upns=${2:-$pod-up}
image=${3:-localhost/egret-busybox}

command -v dnsmasq >/dev/null || {
  echo "pod-uplink.sh: dnsmasq is missing (apt-get install dnsmasq-base; scripts/podman-setup.sh does)" >&2
  exit 1
}
# POD is a pod (its infra container owns the namespace) or, for Compose's
# network_mode: "service:x", the container x.
if podman pod exists "$pod"; then
  owner=$(podman pod inspect "$pod" --format '{{.InfraContainerID}}')
else
  owner=$pod
fi
pid=$(podman inspect "$owner" --format '{{.State.Pid}}')
if [ -z "$pid" ] || [ "$pid" -le 0 ]; then
  echo "pod-uplink.sh: $owner (the owner of $pod's network namespace) is not running" >&2
  exit 1
fi

ip netns add "$upns"
ip -n "$upns" link add eth0 type veth peer name eth0 netns "$pid"
ip -n "$upns" link set lo up
ip -n "$upns" link set eth0 up
ip -n "$upns" addr add 10.200.0.2/24 dev eth0
ip -n "$upns" addr add 10.200.0.3/24 dev eth0
ip -n "$upns" addr add 192.168.77.7/32 dev eth0
ip -n "$upns" -6 addr add fd00:200::2/64 dev eth0 nodad
nsenter -t "$pid" -n ip link set lo up
nsenter -t "$pid" -n ip link set eth0 up
nsenter -t "$pid" -n ip addr add 10.200.0.1/24 dev eth0
nsenter -t "$pid" -n ip -6 addr add fd00:200::1/64 dev eth0 nodad
nsenter -t "$pid" -n ip route add default via 10.200.0.2

mkdir -p /run/egret-pod
ip netns exec "$upns" dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.200.0.2 --port=53 --no-dhcp-interface=eth0 \
  --address=/github.com/10.200.0.2 --address=/example.com/10.200.0.3 \
  --pid-file="/run/egret-pod/$upns-dnsmasq.pid"

podman run -d --name "$pod-upstream" --network "ns:/run/netns/$upns" "$image" sh -c \
  'mkdir -p /www; echo "hello from upstream" >/www/index.html
   httpd -f -vv -p 80 -h /www &
   httpd -f -vv -p 9000 -h /www &
   wait' >/dev/null
for _ in $(seq 100); do
  if ip netns exec "$upns" ss -Hltn 'sport = :9000' | grep -q . &&
    ip netns exec "$upns" ss -Hltn 'sport = :80' | grep -q .; then
    exit 0
  fi
  sleep 0.1
done
echo "pod-uplink.sh: the upstream servers in $upns did not start; see podman logs $pod-upstream" >&2
exit 1
