//! RFC 3339 timestamps, the one place egret reads and writes them (events,
//! dashboard entries): parse what producers send (any offset, any
//! fraction) and print UTC with nanoseconds. Pure: the current time is
//! always passed in as nanoseconds since the Unix epoch.

/// Formats nanoseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn format_rfc3339_nanos(unix_nanos: i128) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Parses an RFC 3339 date-time (`T`, `t` or a space between date and
/// time; `Z` or a numeric offset) into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i128> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac = frac * 10 + i128::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            frac *= 10;
        }
    }
    let offset_secs: i128 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let oh = i128::from((h1 - b'0') * 10 + (h2 - b'0'));
            let om = i128::from((m1 - b'0') * 10 + (m2 - b'0'));
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // A leap second (":60") is folded into the next second.
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(secs * 1_000_000_000 + frac)
}

fn is_leap(y: i128) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i128, m: i128) -> i128 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i128, m: i128, d: i128) -> i128 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i128) -> (i128, i128, i128) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_table() {
        for (nanos, want) in [
            (0i128, "1970-01-01T00:00:00.000000000Z"),
            (1_795_812_000_123_456_789, "2026-11-27T20:40:00.123456789Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00.000000000Z"),
            (-1, "1969-12-31T23:59:59.999999999Z"),
        ] {
            assert_eq!(format_rfc3339_nanos(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn parse_table() {
        let ok: &[(&str, &str)] = &[
            ("2026-11-21T20:58:33Z", "2026-11-21T20:58:33.000000000Z"),
            ("2026-11-21T20:58:33.5Z", "2026-11-21T20:58:33.500000000Z"),
            ("2026-11-21T20:58:33.123456789123Z", "2026-11-21T20:58:33.123456789Z"),
            ("2026-11-21t22:58:33.1+02:00", "2026-11-21T20:58:33.100000000Z"),
            ("2026-11-21 15:28:33-05:30", "2026-11-21T20:58:33.000000000Z"),
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000000000Z"),
            ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00.000000000Z"),
        ];
        for (s, want) in ok {
            let n = parse_rfc3339(s).unwrap_or_else(|| panic!("{s} should parse"));
            assert_eq!(format_rfc3339_nanos(n), *want, "{s}");
        }
        for s in [
            "",
            "2026-11-21",
            "2026-11-21T20:58:33",
            "2026-13-21T20:58:33Z",
            "2025-02-29T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T20:58:33.Z",
            "2026-11-21T20:58:33+2:00",
            "2026-11-21T20:58:33Zjunk",
            "yesterday at noon, roughly",
            "2026-11-21T20:58:33\u{e9}Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn round_trip_over_many_days() {
        for day in (0i128..2_900_000).step_by(997) {
            let n = day * 86_400 * 1_000_000_000 + 12_345;
            assert_eq!(parse_rfc3339(&format_rfc3339_nanos(n)), Some(n), "day {day}");
        }
    }
}
