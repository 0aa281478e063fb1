//! TLS ClientHello → [`ClientHello`] (the SNI and whether ECH is offered).
//!
//! Pure: bytes in, value out; no I/O, no clock. [`parse`] returns `Ok(None)`
//! until the whole ClientHello has arrived, so the shell can call it after
//! every read. A hello may be split across TCP segments (the shell's
//! problem: it just calls again with more bytes) and across several TLS
//! records (handled here: handshake fragments are reassembled, RFC 8446
//! §5.1). The total is bounded by [`MAX_HELLO`].

use std::fmt;
use std::net::IpAddr;

use crate::policy;

/// The largest ClientHello handshake message we accept. Post-quantum key
/// shares (X25519MLKEM768 is 1,216 bytes each) push real hellos past one
/// segment, sometimes past 16 KiB with several shares and padding; 64 KiB
/// is far above any real client and small enough to keep per connection.
pub const MAX_HELLO: usize = 64 * 1024;

/// RFC 8446 §5.1: a plaintext record fragment is at most 2^14 bytes.
const MAX_RECORD: usize = 1 << 14;
const RECORD_HEADER: usize = 5;
/// The most bytes one record takes on the wire (header + 2^14).
pub const MAX_RECORD_WIRE: usize = RECORD_HEADER + MAX_RECORD;
/// The most bytes of records we buffer while waiting for a hello: the
/// message cap plus room for record headers of a normally framed hello.
pub const MAX_BUFFER: usize = MAX_HELLO + 16 * 1024;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0x0000;
/// draft-ietf-tls-esni: `encrypted_client_hello`.
const EXT_ECH: u16 = 0xfe0d;
/// RFC 6066 §3: `NameType.host_name`.
const NAME_TYPE_HOST: u8 = 0;

/// What the hello says about the server name, modelled on rustls'
/// `ServerNamePayload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// A host name, normalised by [`policy::normalize`].
    Name(String),
    /// An IP address where a name should be (RFC 6066 §3: "Literal IPv4
    /// and IPv6 addresses are not permitted in HostName").
    IpLiteral(IpAddr),
    /// A host_name entry that is not a usable name (bad characters, too
    /// long, not ASCII); the raw text is kept for the event, lossily.
    Invalid(String),
    /// No server_name extension, or one without a host_name entry.
    Absent,
}

/// The parts of a ClientHello that the proxy decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub sni: Sni,
    /// The hello offers Encrypted Client Hello (extension 0xfe0d). The SNI
    /// above is then the outer, public name, which is what we can check.
    pub ech: bool,
    /// Bytes of input taken by the records that carried the hello.
    pub consumed: usize,
}

/// Why bytes are not a ClientHello we accept. Traffic errors: the shell
/// blocks the connection with reason `peek-failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// The first record is not a handshake record (plain HTTP on 443,
    /// SSLv2, garbage).
    NotHandshake(u8),
    /// A record header whose major version is not 3.
    BadVersion(u8, u8),
    /// A record longer than 2^14 bytes, or an empty one.
    BadRecordLength(usize),
    /// The first handshake message is not a ClientHello.
    NotClientHello(u8),
    /// The hello (or the bytes before it completes) exceeds [`MAX_HELLO`].
    TooLarge(usize),
    /// A length or field inside the hello is inconsistent.
    Malformed(&'static str),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotHandshake(t) => {
                write!(f, "tls: first record has content type {t}, not handshake (22)")
            }
            TlsError::BadVersion(a, b) => write!(f, "tls: record version {a}.{b} is not 3.x"),
            TlsError::BadRecordLength(n) => write!(f, "tls: record length {n} outside 1..=16384"),
            TlsError::NotClientHello(t) => write!(f, "tls: handshake message type {t}, not client_hello (1)"),
            TlsError::TooLarge(n) => write!(f, "tls: client hello of {n} bytes exceeds {MAX_HELLO}"),
            TlsError::Malformed(what) => write!(f, "tls: malformed client hello: {what}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Parses the ClientHello at the start of `buf`.
///
/// `Ok(None)`: not complete yet, read more. Bytes after the hello (early
/// data, a second flight) are ignored; `consumed` says where they start.
pub fn parse(buf: &[u8]) -> Result<Option<ClientHello>, TlsError> {
    Progress::default().poll(buf)
}

/// [`parse`] for a buffer that only grows between calls (the shell's read
/// buffer). The walk over the record headers resumes where the last call
/// stopped and the hello is reassembled and parsed once, when the record
/// carrying its last byte has arrived: a client trickling its hello one
/// byte at a time, or in thousands of one-byte records, costs time linear
/// in what it sent. Errors come as early as from [`parse`] (a bad record
/// header fails at its first wrong byte).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Start of the record being walked.
    pos: usize,
    /// Payload bytes of that record already walked.
    taken: usize,
    /// The 4-byte handshake header, which may itself be split across
    /// records, and how much of the handshake message has been walked.
    header: [u8; 4],
    have: usize,
    /// The handshake body length, once its header is complete.
    need: Option<usize>,
    /// Record headers and bytes walked, and full parses: the cost so far.
    work: usize,
    parses: usize,
}

impl Progress {
    /// `buf` is the previous call's buffer with bytes appended.
    pub fn poll(&mut self, buf: &[u8]) -> Result<Option<ClientHello>, TlsError> {
        let Some((msg_len, consumed)) = self.scan(buf)? else {
            return Ok(None);
        };
        self.parses += 1;
        // Reassemble the fragments into one message.
        let mut msg = Vec::with_capacity(4 + msg_len);
        let mut pos = 0;
        while msg.len() < 4 + msg_len {
            let len = u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]) as usize;
            msg.extend_from_slice(&buf[pos + RECORD_HEADER..pos + RECORD_HEADER + len]);
            pos += RECORD_HEADER + len;
        }
        let (sni, ech) = parse_body(&msg[4..4 + msg_len])?;
        Ok(Some(ClientHello { sni, ech, consumed }))
    }

    /// Record headers and bytes looked at plus bytes parsed so far; tests
    /// check that it stays linear in the bytes received.
    pub fn work(&self) -> usize {
        self.work
    }

    /// How many times the whole hello was reassembled and parsed.
    pub fn parses(&self) -> usize {
        self.parses
    }

    /// Walks the records from where the last call stopped; returns
    /// (handshake body length, bytes of records carrying it) once the
    /// records hold the whole message.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, TlsError> {
        loop {
            self.work += 1;
            // Only at a record boundary: `have` also counts the walked part
            // of a record still arriving, and the hello ends with a whole
            // record.
            if let (Some(n), 0) = (self.need, self.taken) {
                if self.have >= 4 + n {
                    self.work += self.pos;
                    return Ok(Some((n, self.pos)));
                }
            }
            // Bound the bytes buffered, whatever the record framing (tiny
            // records carry five bytes of header each).
            if self.pos > MAX_BUFFER {
                return Err(TlsError::TooLarge(self.pos));
            }
            let pos = self.pos;
            let Some(h) = buf.get(pos..pos + RECORD_HEADER) else {
                // A partial header may already be wrong: fail early on
                // garbage instead of waiting for the header timeout.
                if let Some(&t) = buf.get(pos) {
                    if t != CONTENT_HANDSHAKE {
                        return Err(TlsError::NotHandshake(t));
                    }
                }
                if let Some(&major) = buf.get(pos + 1) {
                    if major != 3 {
                        return Err(TlsError::BadVersion(major, buf.get(pos + 2).copied().unwrap_or(0)));
                    }
                }
                return Ok(None);
            };
            if h[0] != CONTENT_HANDSHAKE {
                return Err(TlsError::NotHandshake(h[0]));
            }
            if h[1] != 3 {
                return Err(TlsError::BadVersion(h[1], h[2]));
            }
            let len = u16::from_be_bytes([h[3], h[4]]) as usize;
            // RFC 8446 §5.1: zero-length handshake fragments MUST NOT be sent.
            if len == 0 || len > MAX_RECORD {
                return Err(TlsError::BadRecordLength(len));
            }
            let start = pos + RECORD_HEADER;
            // start + taken <= the end of what arrived of this record.
            let frag = &buf[(start + self.taken).min(buf.len())..(start + len).min(buf.len())];
            self.work += frag.len();
            let mut i = 0;
            while self.have < 4 && i < frag.len() {
                self.header[self.have] = frag[i];
                self.have += 1;
                i += 1;
                if self.have == 4 {
                    if self.header[0] != HANDSHAKE_CLIENT_HELLO {
                        return Err(TlsError::NotClientHello(self.header[0]));
                    }
                    let n = u32::from_be_bytes([0, self.header[1], self.header[2], self.header[3]]) as usize;
                    if n > MAX_HELLO {
                        return Err(TlsError::TooLarge(n));
                    }
                    self.need = Some(n);
                }
            }
            self.have += frag.len() - i;
            self.taken += frag.len();
            if self.taken < len {
                return Ok(None);
            }
            self.pos = start + len;
            self.taken = 0;
        }
    }
}

/// A bounded cursor over a length-prefixed structure (rustls' `Reader`).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TlsError> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(TlsError::Malformed(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TlsError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TlsError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let n = self.u8(what)? as usize;
        self.take(n, what)
    }

    /// A vector with a two-byte length prefix, as a sub-reader.
    fn sub16(&mut self, what: &'static str) -> Result<Reader<'a>, TlsError> {
        let n = self.u16(what)? as usize;
        Ok(Reader::new(self.take(n, what)?))
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// RFC 8446 §4.1.2 ClientHello body (the TLS 1.2 layout is the same).
fn parse_body(body: &[u8]) -> Result<(Sni, bool), TlsError> {
    let mut r = Reader::new(body);
    r.take(2, "legacy_version")?;
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(TlsError::Malformed("legacy_session_id longer than 32 bytes"));
    }
    let suites = r.sub16("cipher_suites")?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return Err(TlsError::Malformed("cipher_suites length not a positive even number"));
    }
    let compression = r.vec8("legacy_compression_methods")?;
    if compression.is_empty() {
        return Err(TlsError::Malformed("no compression methods"));
    }
    // A TLS 1.2 hello may end here: no extensions, so no SNI.
    if r.is_empty() {
        return Ok((Sni::Absent, false));
    }
    let mut exts = r.sub16("extensions")?;
    if !r.is_empty() {
        return Err(TlsError::Malformed("bytes after extensions"));
    }
    let mut seen: Vec<u16> = Vec::new();
    let mut sni = Sni::Absent;
    let mut ech = false;
    while !exts.is_empty() {
        let typ = exts.u16("extension type")?;
        let data = exts.sub16("extension data")?;
        // RFC 8446 §4.2: "There MUST NOT be more than one extension of the
        // same type" — a second server_name could smuggle a second name.
        if seen.contains(&typ) {
            return Err(TlsError::Malformed("duplicate extension"));
        }
        seen.push(typ);
        match typ {
            EXT_SERVER_NAME => sni = parse_server_name(data)?,
            EXT_ECH => ech = true,
            _ => {}
        }
    }
    Ok((sni, ech))
}

/// RFC 6066 §3 `ServerNameList`.
fn parse_server_name(mut data: Reader<'_>) -> Result<Sni, TlsError> {
    let mut list = data.sub16("server_name_list")?;
    if !data.is_empty() {
        return Err(TlsError::Malformed("bytes after server_name_list"));
    }
    if list.is_empty() {
        return Err(TlsError::Malformed("empty server_name_list"));
    }
    let mut found: Option<&[u8]> = None;
    while !list.is_empty() {
        let typ = list.u8("server name type")?;
        let name = list.sub16("server name")?.buf;
        if typ == NAME_TYPE_HOST {
            // RFC 6066 §3: "MUST NOT contain more than one name of the same
            // name_type".
            if found.is_some() {
                return Err(TlsError::Malformed("two host_name entries"));
            }
            found = Some(name);
        }
    }
    Ok(match found {
        None => Sni::Absent,
        Some(raw) => classify_name(raw),
    })
}

fn classify_name(raw: &[u8]) -> Sni {
    let text = String::from_utf8_lossy(raw);
    if !raw.is_ascii() {
        return Sni::Invalid(text.into_owned());
    }
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(&text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Sni::IpLiteral(ip);
    }
    match policy::normalize(&text) {
        Ok(name) => Sni::Name(name),
        Err(_) => Sni::Invalid(text.into_owned()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ClientHello handshake message (header included) with the
    /// given extensions; `pad` adds a padding extension (RFC 7685) of that
    /// many bytes, to make large hellos.
    pub(crate) fn hello_msg(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(32);
        body.extend_from_slice(&[9u8; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(d.len() as u16).to_be_bytes());
            e.extend_from_slice(d);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    pub(crate) fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![NAME_TYPE_HOST];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&entry);
        (EXT_SERVER_NAME, d)
    }

    /// Wraps a handshake message in records of at most `size` bytes.
    pub(crate) fn records(msg: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in msg.chunks(size) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    /// A hello with an SNI and a key_share extension of `share` bytes, as
    /// post-quantum hybrids make them.
    pub(crate) fn big_hello(name: &str, share: usize) -> Vec<u8> {
        let mut ks = ((share + 4) as u16).to_be_bytes().to_vec();
        ks.extend_from_slice(&[0x11, 0xec]); // X25519MLKEM768
        ks.extend_from_slice(&(share as u16).to_be_bytes());
        ks.extend(std::iter::repeat(0x42).take(share));
        let msg = hello_msg(&[sni_ext(name.as_bytes()), (51, ks)]);
        records(&msg, MAX_RECORD)
    }

    fn name(s: &str) -> Sni {
        Sni::Name(s.to_owned())
    }

    fn check(input: &[u8], expect: Result<(Sni, bool), TlsError>) {
        let got = parse(input).map(|o| o.map(|h| (h.sni, h.ech)));
        assert_eq!(got, expect.map(Some), "input {} bytes", input.len());
    }

    fn data(file: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/fuzz/tls_client_hello")
            .join(file);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn real_captures() {
        let cases: &[(&str, Sni)] = &[
            // curl lowercases nothing itself: the normaliser does.
            ("curl-sni.bin", name("allowed.example")),
            ("curl-tls12.bin", name("allowed.example")),
            // RFC 6066: clients leave SNI out when connecting to an IP.
            ("curl-ip-no-sni.bin", Sni::Absent),
            ("openssl-sni.bin", name("www.allowed.example")),
            ("openssl-noservername.bin", Sni::Absent),
        ];
        for (file, sni) in cases {
            let bytes = data(file);
            let h = parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}")).expect(file);
            assert_eq!(&h.sni, sni, "{file}");
            assert!(!h.ech, "{file}");
            assert_eq!(h.consumed, bytes.len(), "{file}");
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let mut inputs: Vec<Vec<u8>> =
            ["curl-sni.bin", "openssl-sni.bin", "openssl-noservername.bin"].iter().map(|f| data(f)).collect();
        let msg = hello_msg(&[sni_ext(b"split.example")]);
        inputs.push(records(&msg, 7));
        inputs.push(records(&msg, 1));
        inputs.push(big_hello("pq.example", 1216));
        for input in inputs {
            for n in 0..input.len() {
                assert_eq!(parse(&input[..n]), Ok(None), "prefix {n} of {}", input.len());
            }
            assert!(parse(&input).unwrap().is_some());
        }
    }

    #[test]
    fn fragmented_across_records() {
        let msg = hello_msg(&[sni_ext(b"frag.example")]);
        for size in [1, 2, 3, 4, 5, 50, msg.len() - 1] {
            check(&records(&msg, size), Ok((name("frag.example"), false)));
        }
    }

    #[test]
    fn big_post_quantum_hellos() {
        // One X25519MLKEM768 share; then beyond one 16 KiB record.
        for share in [1216, 20_000, 40_000] {
            let input = big_hello("pq.example", share);
            check(&input, Ok((name("pq.example"), false)));
            assert_eq!(parse(&input).unwrap().unwrap().consumed, input.len());
        }
    }

    #[test]
    fn sni_kinds() {
        let cases: &[(&[u8], Sni)] = &[
            (b"Example.COM.", name("example.com")),
            (b"xn--bcher-kva.example", name("xn--bcher-kva.example")),
            (b"10.0.0.1", Sni::IpLiteral("10.0.0.1".parse().unwrap())),
            (b"2001:db8::1", Sni::IpLiteral("2001:db8::1".parse().unwrap())),
            (b"[2001:db8::1]", Sni::IpLiteral("2001:db8::1".parse().unwrap())),
            (b"bad name.example", Sni::Invalid("bad name.example".into())),
            (b"", Sni::Invalid(String::new())),
            (b"caf\xc3\xa9.example", Sni::Invalid("caf\u{e9}.example".into())),
            (b"a\0.example", Sni::Invalid("a\0.example".into())),
        ];
        for (raw, sni) in cases {
            check(&records(&hello_msg(&[sni_ext(raw)]), 16384), Ok((sni.clone(), false)));
        }
    }

    #[test]
    fn ech_is_recorded() {
        let msg = hello_msg(&[sni_ext(b"public.example"), (EXT_ECH, vec![0; 40])]);
        check(&records(&msg, 16384), Ok((name("public.example"), true)));
    }

    #[test]
    fn extra_bytes_after_hello_are_left() {
        let mut input = records(&hello_msg(&[sni_ext(b"a.example")]), 16384);
        let n = input.len();
        input.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(parse(&input).unwrap().unwrap().consumed, n);
    }

    #[test]
    fn no_extensions_at_all() {
        // A TLS 1.2 hello may omit the extensions block entirely.
        let mut msg = hello_msg(&[]);
        msg.truncate(msg.len() - 2);
        let body_len = (msg.len() - 4) as u32;
        msg[1..4].copy_from_slice(&body_len.to_be_bytes()[1..]);
        check(&records(&msg, 16384), Ok((Sni::Absent, false)));
    }

    /// Malformed inputs, each named for what it breaks.
    #[test]
    fn malformed() {
        let good = hello_msg(&[sni_ext(b"a.example")]);
        let rec = |m: &[u8]| records(m, 16384);
        let set_len = |m: &mut Vec<u8>| {
            let n = (m.len() - 4) as u32;
            m[1..4].copy_from_slice(&n.to_be_bytes()[1..]);
        };
        let mut cases: Vec<(&str, Vec<u8>, TlsError)> = vec![
            ("plain http on 443", b"GET / HTTP/1.1\r\n".to_vec(), TlsError::NotHandshake(b'G')),
            ("sslv2 record", vec![0x80, 0x2e, 1, 3, 1], TlsError::NotHandshake(0x80)),
            ("record version 2", vec![22, 2, 0, 0, 5], TlsError::BadVersion(2, 0)),
            ("zero-length record", vec![22, 3, 1, 0, 0], TlsError::BadRecordLength(0)),
            ("record over 2^14", vec![22, 3, 1, 0x40, 0x01], TlsError::BadRecordLength(16385)),
            ("server hello first", rec(&[2, 0, 0, 1, 0]), TlsError::NotClientHello(2)),
            ("hello length over cap", rec(&[1, 0x01, 0, 1]), TlsError::TooLarge(65537)),
        ];
        let mut short = good.clone();
        short.truncate(4 + 20);
        set_len(&mut short);
        cases.push(("body shorter than random", rec(&short), TlsError::Malformed("random")));

        let mut odd = good.clone();
        odd[4 + 2 + 32 + 1 + 32 + 1] = 3; // cipher_suites length 4 → 3
        cases.push((
            "odd cipher_suites length",
            rec(&odd),
            TlsError::Malformed("cipher_suites length not a positive even number"),
        ));

        let dup = hello_msg(&[sni_ext(b"a.example"), sni_ext(b"b.example")]);
        cases.push(("duplicate server_name", rec(&dup), TlsError::Malformed("duplicate extension")));

        let mut two = vec![];
        for n in [&b"a.example"[..], b"b.example"] {
            two.push(NAME_TYPE_HOST);
            two.extend_from_slice(&(n.len() as u16).to_be_bytes());
            two.extend_from_slice(n);
        }
        let mut d = (two.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&two);
        cases.push((
            "two host names in one list",
            rec(&hello_msg(&[(0, d)])),
            TlsError::Malformed("two host_name entries"),
        ));
        cases.push((
            "empty server_name_list",
            rec(&hello_msg(&[(0, vec![0, 0])])),
            TlsError::Malformed("empty server_name_list"),
        ));
        cases.push((
            "server name longer than its extension",
            rec(&hello_msg(&[(0, vec![0, 5, 0, 0, 9, b'a', b'b'])])),
            TlsError::Malformed("server name"),
        ));

        let mut trailing = good.clone();
        trailing.push(0);
        set_len(&mut trailing);
        cases.push(("byte after extensions", rec(&trailing), TlsError::Malformed("bytes after extensions")));

        let mut ext_overrun = good.clone();
        let at = ext_overrun.len() - sni_ext(b"a.example").1.len() - 6;
        ext_overrun[at] = 0xff; // an extensions block longer than the body
        cases.push(("extensions longer than body", rec(&ext_overrun), TlsError::Malformed("extensions")));

        let mut application_data_second = rec(&good[..10]);
        application_data_second.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        cases.push(("non-handshake record mid-hello", application_data_second, TlsError::NotHandshake(23)));

        for (what, input, err) in cases {
            assert_eq!(parse(&input), Err(err), "{what}");
        }
    }

    #[test]
    fn garbage_fails_before_five_bytes() {
        // A client speaking something else is rejected at once, not after
        // the header timeout.
        assert_eq!(parse(b"G"), Err(TlsError::NotHandshake(b'G')));
        assert_eq!(parse(&[22, 9]), Err(TlsError::BadVersion(9, 0)));
    }

    #[test]
    fn too_many_small_records_are_bounded() {
        // One-byte records, each carrying 5 bytes of header overhead: the
        // cap is on the bytes buffered, whatever the framing.
        let msg = hello_msg(&[sni_ext(b"a.example"), (51, vec![0x42; 60_000])]);
        let input = records(&msg, 1);
        assert!(matches!(parse(&input), Err(TlsError::TooLarge(_))));
    }

    /// Mutated real hellos: never a panic, and any name that comes out is
    /// in normal form (normalising it again changes nothing).
    #[test]
    fn mutations_never_panic_and_names_are_normal() {
        let seeds: Vec<Vec<u8>> =
            ["curl-sni.bin", "curl-tls12.bin", "openssl-sni.bin"].iter().map(|f| data(f)).collect();
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut input = seeds[i % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % input.len();
                match next() % 3 {
                    0 => input[at] = next() as u8,
                    1 => input.truncate(at.max(1)),
                    _ => input.insert(at, next() as u8),
                }
            }
            if let Ok(Some(h)) = parse(&input) {
                if let Sni::Name(n) = &h.sni {
                    assert_eq!(policy::normalize(n).as_deref(), Ok(n.as_str()), "{input:?}");
                }
                assert!(h.consumed <= input.len());
            }
        }
    }

    /// The resumable parser fed a growing buffer (in pieces of 1 and 7
    /// bytes) says at every length what a fresh parse says: real captures,
    /// tiny records, and a hello that ends before its record does.
    #[test]
    fn progress_agrees_with_parse_on_every_prefix() {
        let msg = hello_msg(&[sni_ext(b"allowed.test")]);
        let mut tail = msg.clone();
        tail.extend_from_slice(&[0xaa; 50]);
        let inputs = [
            ("curl", data("curl-sni.bin")),
            ("one-byte records", records(&msg, 1)),
            ("seven-byte records", records(&msg, 7)),
            ("bytes after the hello in its record", records(&tail, MAX_RECORD)),
            ("not a hello", records(&[2, 0, 0, 1, 0], 16)),
        ];
        for (what, input) in inputs {
            for piece in [1, 7] {
                let mut p = Progress::default();
                let mut end = 0;
                loop {
                    end = (end + piece).min(input.len());
                    let got = p.poll(&input[..end]);
                    assert_eq!(got, parse(&input[..end]), "{what}: {end} bytes in pieces of {piece}");
                    if got != Ok(None) || end == input.len() {
                        break;
                    }
                }
                assert!(p.parses() <= 1, "{what}: {} parses", p.parses());
                assert!(p.work() <= 3 * input.len() + 8, "{what}: work {} for {}", p.work(), input.len());
            }
        }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    /// The shell stops reading at MAX_BUFFER + MAX_RECORD_WIRE bytes and
    /// relies on the parser having decided by then, whatever the framing.
    #[test]
    fn parser_decides_within_the_shell_cap() {
        let cap = MAX_BUFFER + MAX_RECORD_WIRE;
        for rec in [1usize, 100, 16384] {
            // A hello that claims the maximum size and never ends.
            let mut msg = vec![HANDSHAKE_CLIENT_HELLO, 0, 0xff, 0xff];
            msg.extend(std::iter::repeat(0u8).take(cap));
            let input = tests::records(&msg, rec);
            assert!(parse(&input[..cap]).is_err(), "records of {rec}");
        }
    }
}
