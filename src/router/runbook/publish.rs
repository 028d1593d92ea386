//! The value a step publishes: taken from its (already redacted) output by a regex's first
//! capture group or a JSON pointer, then checked exactly as an argument of that kind would
//! be, so a later step's template never receives what a person could not have typed.

use crate::catalog::{Publish, PublishFrom};
use crate::router::bind::check_value;

/// The value `publish` takes from `output`, or why there is none (said in the step's result;
/// never more of the output than the argument check quotes).
pub(super) fn extract(publish: &Publish, output: &str) -> Result<String, String> {
    let name = &publish.value.name;
    let raw = match &publish.from {
        PublishFrom::Regex(re) => re
            .captures(output)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned())
            .ok_or_else(|| format!("publish {name}: the output has no match for its regex"))?,
        PublishFrom::Json(pointer) => {
            let json: serde_json::Value = serde_json::from_str(output.trim())
                .map_err(|_| format!("publish {name}: the output is not JSON"))?;
            match json.pointer(pointer) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                Some(_) => {
                    return Err(format!(
                        "publish {name}: {pointer} is not a string, number or boolean"
                    ));
                }
                None => return Err(format!("publish {name}: the output has no {pointer}")),
            }
        }
    };
    // `.` and `..` would name another path inside a URL, wherever the value lands.
    if raw == "." || raw == ".." {
        return Err(format!("publish {name}: the value may not be {raw:?}"));
    }
    check_value(&publish.value, &raw).map_err(|e| format!("publish {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ArgKind, ArgSpec};

    fn publish(kind: ArgKind, from: PublishFrom) -> Publish {
        Publish {
            value: ArgSpec {
                name: "version".into(),
                kind,
                required: true,
                help: None,
            },
            from,
        }
    }

    #[test]
    fn values_come_from_a_capture_group_or_a_pointer_and_are_checked() {
        let pattern = regex::Regex::new(r"^(?:v[0-9]+)$").unwrap();
        let string = ArgKind::String {
            pattern: Some(pattern),
        };
        let by_regex = publish(
            string.clone(),
            PublishFrom::Regex(regex::Regex::new(r"deployed (\S+)").unwrap()),
        );
        assert_eq!(extract(&by_regex, "ok\ndeployed v42\n").unwrap(), "v42");
        let bad = extract(&by_regex, "deployed --force").unwrap_err();
        assert!(bad.contains("must not start with '-'"), "{bad}");
        assert!(
            extract(&by_regex, "nothing")
                .unwrap_err()
                .contains("no match")
        );
        let by_pointer = publish(
            ArgKind::Int { min: 0, max: 10 },
            PublishFrom::Json("/job/id".into()),
        );
        assert_eq!(extract(&by_pointer, r#"{"job": {"id": 7}}"#).unwrap(), "7");
        let out_of_range = extract(&by_pointer, r#"{"job": {"id": 70}}"#).unwrap_err();
        assert!(out_of_range.contains("between 0 and 10"), "{out_of_range}");
        assert!(
            extract(&by_pointer, "not json")
                .unwrap_err()
                .contains("not JSON")
        );
        let dots = publish(
            ArgKind::String { pattern: None },
            PublishFrom::Json("/p".into()),
        );
        assert!(extract(&dots, r#"{"p": ".."}"#).is_err());
    }
}
