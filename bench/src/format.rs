//! Number formatting and size lists exactly as fabtests' fi_pingpong prints and parses
//! them, so that nacre-bench lines sit under fi_pingpong's.

/// `1k`, `1.5k`, `10k`, `1m`, `6m`, `1.9g`: one truncated decimal below 10 units.
pub fn size_str(size: u64) -> String {
    let (base, suffix) = if size >= 1 << 30 {
        (1u64 << 30, "g")
    } else if size >= 1 << 20 {
        (1 << 20, "m")
    } else if size >= 1 << 10 {
        (1 << 10, "k")
    } else {
        (1, "")
    };
    let whole = size / base;
    let tenth = if whole < 10 {
        (size % base) * 10 / base
    } else {
        0
    };
    if tenth > 0 {
        format!("{whole}.{tenth}{suffix}")
    } else {
        format!("{whole}{suffix}")
    }
}

/// Counts: `999`, `1k`, `10m`, `2b` (decimal, truncated).
pub fn cnt_str(count: u64) -> String {
    if count >= 1_000_000_000 {
        format!("{}b", count / 1_000_000_000)
    } else if count >= 1_000_000 {
        format!("{}m", count / 1_000_000)
    } else if count >= 1_000 {
        format!("{}k", count / 1_000)
    } else {
        count.to_string()
    }
}

pub const HEADER: &str =
    "bytes   #sent   #ack     total       time     MB/sec    usec/xfer   Mxfers/sec";

/// One result row: `size` bytes per message, `sent` pings, `acked` pongs, `micros` elapsed.
pub fn row(size: u64, sent: u64, acked: u64, micros: f64) -> String {
    let bytes = sent * size * 2;
    let ack = if sent == acked {
        format!("={:<8}", cnt_str(acked))
    } else if sent < acked {
        format!("-{:<8}", cnt_str(acked - sent))
    } else {
        format!("+{:<8}", cnt_str(sent - acked))
    };
    let usec_per_xfer = micros / sent as f64 / 2.0;
    format!(
        "{:<8}{:<8}{ack}{:<8}{:8.2}s{:10.2}{:11.2}{:11.2}",
        size_str(size),
        cnt_str(sent),
        size_str(bytes),
        micros / 1e6,
        bytes as f64 / micros,
        usec_per_xfer,
        1.0 / usec_per_xfer
    )
}

/// fi_pingpong's default sizes (no -S).
pub const DEFAULT_SIZES: [u64; 6] = [64, 256, 1024, 4096, 65536, 1048576];
/// The buffer fi_pingpong sizes itself for without -S; `all` stops there.
pub const ALL_CAP: u64 = 6 << 20;

/// Parses `-S`: `all`, one size, or a comma-separated list; sizes in bytes, with an
/// optional k/m/g suffix (fi_pingpong takes bytes only; a superset is harmless).
pub fn parse_sizes(arg: Option<&str>, max_msg: u64) -> Result<Vec<u64>, String> {
    let cap = max_msg.min(ALL_CAP);
    let Some(arg) = arg else {
        return Ok(DEFAULT_SIZES
            .iter()
            .copied()
            .filter(|&s| s <= cap)
            .collect());
    };
    if arg.eq_ignore_ascii_case("all") {
        return Ok(all_sizes(cap));
    }
    arg.split(',').map(parse_size).collect()
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("Error parsing \"{s}\": not a size in bytes"))
}

/// 0, 1, then 2^i and 2^i + 2^(i-1) up to `cap`, as fi_pingpong's `-S all`.
fn all_sizes(cap: u64) -> Vec<u64> {
    let mut sizes = vec![0, 1];
    let mut i = 1;
    loop {
        let a = 1u64 << i;
        let b = a + (a >> 1);
        if a > cap || b > cap {
            if a <= cap {
                sizes.push(a);
            }
            break;
        }
        sizes.push(a);
        sizes.push(b);
        i += 1;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_fi_pingpong_prints_them() {
        let cases = [
            (0, "0"),
            (64, "64"),
            (1000, "1000"),
            (1024, "1k"),
            (1280, "1.2k"),
            (1536, "1.5k"),
            (10240, "10k"),
            (1048576, "1m"),
            (2000000, "1.9m"),
            (6291456, "6m"),
            (2u64 << 30, "2g"),
        ];
        for (n, s) in cases {
            assert_eq!(size_str(n), s, "{n}");
        }
        assert_eq!(cnt_str(999), "999");
        assert_eq!(cnt_str(1500), "1k");
        assert_eq!(cnt_str(10_000_000), "10m");
    }

    #[test]
    fn row_has_fi_pingpong_columns() {
        let r = row(1048576, 1000, 1000, 1_310_000.0);
        assert!(
            r.starts_with("1m      1k      =1k      1.9g        1.31s"),
            "{r}"
        );
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(cols.len(), 8, "{r}");
        assert_eq!(cols[6], "655.00");
    }

    #[test]
    fn size_lists_parse() {
        assert_eq!(
            parse_sizes(Some("64,4096"), u64::MAX).unwrap(),
            vec![64, 4096]
        );
        assert_eq!(parse_sizes(Some("1m"), u64::MAX).unwrap(), vec![1 << 20]);
        assert_eq!(parse_sizes(None, 4096).unwrap(), vec![64, 256, 1024, 4096]);
        let all = parse_sizes(Some("all"), u64::MAX).unwrap();
        assert_eq!(&all[..8], &[0, 1, 2, 3, 4, 6, 8, 12]);
        assert_eq!(*all.last().unwrap(), 6 << 20);
        assert_eq!(all.len(), 46);
        assert!(parse_sizes(Some("12x"), u64::MAX).is_err());
        assert!(parse_sizes(Some(""), u64::MAX).is_err());
    }
}
