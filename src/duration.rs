//! Human durations as written in specs: `30s`, `15m`, `4h`, `2d`, `1h30m`.
//!
//! A duration is elapsed time (a `2d` bake across a daylight-saving change is
//! 48 hours, not two calendar days), so it maps to `chrono::TimeDelta`.

use chrono::TimeDelta;

/// Parse `1h30m`-style text. Units, largest first, each at most once: `d h m s`.
pub fn parse(text: &str) -> Result<TimeDelta, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut last_rank = usize::MAX;
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, secs) = match c {
            'd' => (3, 86_400),
            'h' => (2, 3_600),
            'm' => (1, 60),
            's' => (0, 1),
            _ => return Err(format!("unexpected character `{c}` in `{t}`")),
        };
        if digits.is_empty() {
            return Err(format!("unit `{c}` in `{t}` has no number before it"));
        }
        if rank >= last_rank {
            return Err(format!(
                "units in `{t}` must go from largest to smallest, each once"
            ));
        }
        last_rank = rank;
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("number too large in `{t}`"))?;
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= 366 * 86_400 * 10)
            .ok_or_else(|| format!("`{t}` is longer than ten years"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "`{t}` ends in a number without a unit (s, m, h or d)"
        ));
    }
    Ok(TimeDelta::seconds(total))
}

/// The fix hint shown next to every duration error.
pub const FIX: &str = "write a duration such as 30s, 15m, 4h, 2d or 1h30m";

/// Format as the shortest `2d4h30m`-style text; `0s` for zero.
pub fn format(d: TimeDelta) -> String {
    let mut s = d.num_seconds();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    if s < 0 {
        out.push('-');
        s = -s;
    }
    for (unit, secs) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if s >= secs {
            out.push_str(&format!("{}{unit}", s / secs));
            s %= secs;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("30s", 30)]
    #[case("15m", 900)]
    #[case("4h", 14_400)]
    #[case("2d", 172_800)]
    #[case("1h30m", 5_400)]
    #[case("0m", 0)]
    #[case("1d2h3m4s", 93_784)]
    fn parses(#[case] text: &str, #[case] secs: i64) {
        assert_eq!(parse(text).unwrap(), TimeDelta::seconds(secs));
        assert_eq!(
            parse(&format(TimeDelta::seconds(secs)))
                .unwrap()
                .num_seconds(),
            secs
        );
    }

    #[rstest]
    #[case("")]
    #[case("15")]
    #[case("m")]
    #[case("30m1h")]
    #[case("1h1h")]
    #[case("1.5h")]
    #[case("-5m")]
    #[case("99999999999d")]
    fn rejects(#[case] text: &str) {
        assert!(parse(text).is_err(), "{text} should be rejected");
    }
}
