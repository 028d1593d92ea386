//! `string_enum!`: the closed enums that are stored, configured or typed as one fixed word
//! each (`firing`, `timed_out`, `P2`). One table per enum gives its `ALL`, `as_str`,
//! `Display`, `FromStr` and `TryFrom<String>`, so a word cannot drift between directions.

/// Declares an enum whose variants each stand for one fixed string.
///
/// `enum Name("what") { Variant = "word", ... }`, always `Clone, Copy, Debug, PartialEq, Eq,
/// Hash` (further derives and attributes go above `enum`); add `, ignore_case` after `"what"` to
/// accept any letter case when parsing (the canonical spelling is still `as_str`).
/// A word that matches no variant fails with `unknown <what> "<word>"; expected one of …`.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal $(, $case:ident)?) {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            pub const ALL: [$name; [$($word),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word ),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let ignore_case = string_enum!(@ignore_case $($case)?);
                $crate::domain::string_enum::parse_word(&$name::ALL, $name::as_str, $what, ignore_case, s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
    (@ignore_case) => { false };
    (@ignore_case ignore_case) => { true };
}

/// The variant of `all` whose word is `s`, or the error naming every accepted word.
pub(crate) fn parse_word<T: Copy>(
    all: &[T],
    word: fn(T) -> &'static str,
    what: &str,
    ignore_case: bool,
    s: &str,
) -> Result<T, String> {
    let same = |w: &str| w == s || (ignore_case && w.eq_ignore_ascii_case(s));
    all.iter().copied().find(|v| same(word(*v))).ok_or_else(|| {
        let words: Vec<&str> = all.iter().map(|v| word(*v)).collect();
        format!("unknown {what} {s:?}; expected one of {}", words.join(", "))
    })
}

#[cfg(test)]
mod tests {
    string_enum! {
        enum Colour("colour") {
            Red = "red",
            /// Documented variants keep their docs.
            DarkBlue = "dark_blue",
        }
    }

    string_enum! {
        enum Grade("grade", ignore_case) { A = "A", B = "B" }
    }

    #[test]
    fn words_round_trip_and_unknown_words_name_the_choices() {
        for c in Colour::ALL {
            assert_eq!(c.to_string().parse::<Colour>(), Ok(c));
        }
        assert_eq!(Colour::DarkBlue.as_str(), "dark_blue");
        assert_eq!(
            "Red".parse::<Colour>(),
            Err(r#"unknown colour "Red"; expected one of red, dark_blue"#.to_owned())
        );
        assert_eq!(Colour::try_from("red".to_owned()), Ok(Colour::Red));
    }

    #[test]
    fn ignore_case_accepts_any_case_but_prints_canonically() {
        assert_eq!("b".parse::<Grade>(), Ok(Grade::B));
        assert_eq!(Grade::B.to_string(), "B");
        assert!("c".parse::<Grade>().is_err());
    }
}
