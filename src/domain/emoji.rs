//! Emoji normalisation for approval reactions: platforms send the same reaction as a
//! shortcode (`white_check_mark`, `+1::skin-tone-3`), a Unicode emoji with or without a
//! variation selector, or with a skin-tone modifier. All of them reduce to one canonical form.

/// The canonical form of a reaction: shortcode aliases mapped to their emoji, skin tones and
/// variation selectors removed.
pub fn normalize_emoji(raw: &str) -> String {
    let trimmed = raw.trim().trim_matches(':');
    // Slack appends `::skin-tone-N` to the shortcode.
    let base = trimmed.split("::").next().unwrap_or(trimmed);
    let unicode: String = base
        .chars()
        .filter(|c| !matches!(*c, '\u{FE0F}' | '\u{FE0E}' | '\u{1F3FB}'..='\u{1F3FF}'))
        .collect();
    let canonical = match unicode.to_ascii_lowercase().as_str() {
        "white_check_mark"
        | "heavy_check_mark"
        | "ballot_box_with_check"
        | "check"
        | "✔"
        | "☑"
        | "✅" => "✅",
        "+1" | "thumbsup" | "thumbs_up" | "👍" => "👍",
        "x"
        | "cross_mark"
        | "heavy_multiplication_x"
        | "negative_squared_cross_mark"
        | "❎"
        | "✖"
        | "❌" => "❌",
        "-1" | "thumbsdown" | "thumbs_down" | "👎" => "👎",
        _ => return unicode,
    };
    canonical.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_skin_tones_and_selectors_collapse() {
        for raw in [
            "✅",
            ":white_check_mark:",
            "heavy_check_mark",
            "✔\u{FE0F}",
            "☑️",
        ] {
            assert_eq!(normalize_emoji(raw), "✅", "{raw}");
        }
        for raw in [
            "👍",
            "👍🏽",
            "+1",
            ":+1::skin-tone-4:",
            "thumbsup",
            "👍\u{FE0F}",
        ] {
            assert_eq!(normalize_emoji(raw), "👍", "{raw}");
        }
        for raw in ["❌", ":x:", "heavy_multiplication_x"] {
            assert_eq!(normalize_emoji(raw), "❌", "{raw}");
        }
        assert_eq!(normalize_emoji("🎉"), "🎉");
    }
}
