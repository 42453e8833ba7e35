//! Sizes and counts as people write and read them: `64M`, `64MB` and `64MiB` in,
//! "64 MiB" and "1 conflict" out.

use ghostie_fs::model::Tally;

/// "1.5 GiB", "820 KiB", "12 B".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A size: a number of bytes, or a number with a unit: `k`, `M`, `G` or `T`, each
/// alone or followed by `B` or `iB` (`64M`, `64MB`, `64MiB`, `1.5 G`). Every unit
/// counts in powers of 1024, as rclone and restic read them: a cache size is memory.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("'{text}' is not a size (a number of bytes, or with a unit: 512K, 64M, 64MiB, 1G)")
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `one` or `many`, by `n`.
pub fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// "3 files", "1 conflict".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", plural(n, one, many))
}

/// "2 files and 1 folder", "1 file, 2 links and 3 removals"; "0 files" when nothing.
pub fn tally_sentence(t: &Tally) -> String {
    let mut parts = Vec::new();
    if t.files > 0 || t.total() == 0 {
        parts.push(count(t.files, "file", "files"));
    }
    if t.folders > 0 {
        parts.push(count(t.folders, "folder", "folders"));
    }
    if t.links > 0 {
        parts.push(count(t.links, "link", "links"));
    }
    if t.removed > 0 {
        parts.push(count(t.removed, "removal", "removals"));
    }
    match parts.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_bytes(2_000 * 1024 * 1024 * 1024), "2.0 TiB");
    }

    #[test]
    fn sizes_are_taken_with_or_without_b_and_ib() {
        for text in ["64M", "64MB", "64MiB", "64 MiB", "64m", "64mb", "67108864"] {
            assert_eq!(parse_size(text), Ok(64 << 20), "{text}");
        }
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        for bad in ["", "M", "64X", "-1M", "64 MBB", "1e3", "sixty"] {
            assert!(parse_size(bad).is_err(), "{bad} was taken");
        }
        assert!(parse_size("64X").unwrap_err().contains("'64X'"));
    }

    #[test]
    fn counts_name_what_they_count() {
        assert_eq!(count(1, "conflict", "conflicts"), "1 conflict");
        assert_eq!(count(2, "conflict", "conflicts"), "2 conflicts");
        let t = |files, folders, links, removed| Tally {
            files,
            folders,
            links,
            removed,
        };
        assert_eq!(tally_sentence(&t(0, 0, 0, 0)), "0 files");
        assert_eq!(tally_sentence(&t(2, 1, 0, 0)), "2 files and 1 folder");
        assert_eq!(tally_sentence(&t(1, 0, 0, 0)), "1 file");
        assert_eq!(tally_sentence(&t(0, 2, 0, 0)), "2 folders");
        assert_eq!(
            tally_sentence(&t(1, 0, 2, 3)),
            "1 file, 2 links and 3 removals"
        );
    }
}
