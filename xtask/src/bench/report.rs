//! The benchmark's one table, as Markdown and JSON, under `target/bench/`.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use super::ceilings::{Ceiling, Ceilings};

/// One line of the table: a figure, and (when it has them) a target and its ceiling and
/// the ratio.
#[derive(Clone, Debug)]
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    /// As printed.
    pub measured: String,
    /// The figure compared with the ceiling, in the ceiling's unit.
    pub value: Option<f64>,
    pub ceilings: Vec<Ceiling>,
    /// What the figure should reach, and whether it did (the project's targets).
    pub target: Option<String>,
    pub extra: Value,
}

impl Row {
    pub fn new(section: &'static str, figure: impl Into<String>, measured: impl Into<String>) -> Self {
        Self {
            section,
            figure: figure.into(),
            measured: measured.into(),
            value: None,
            ceilings: Vec::new(),
            target: None,
            extra: Value::Null,
        }
    }

    pub fn target(mut self, target: String) -> Self {
        self.target = Some(target);
        self
    }

    pub fn against(mut self, value: f64, ceilings: impl IntoIterator<Item = Option<Ceiling>>) -> Self {
        self.value = Some(value);
        self.ceilings = ceilings.into_iter().flatten().collect();
        self
    }

    pub fn extra(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }
}

pub struct Report {
    pub title: String,
    /// `key: value` lines printed above the table.
    pub header: Vec<(String, String)>,
    pub rows: Vec<Row>,
    /// Lines printed below the table.
    pub notes: Vec<String>,
    pub ceilings: Ceilings,
    pub json: Value,
}

/// `12,345` for figures of 100 and more, `12.3` below, `0.123` below 1.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 100.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = format!("### {}\n\n", self.title);
        for (k, v) in &self.header {
            md.push_str(&format!("- **{k}:** {v}\n"));
        }
        md.push_str("\n| | figure | measured | target | ceiling (case) | ratio |\n|---|---|---:|---|---|---:|\n");
        let mut last = "";
        for row in &self.rows {
            let section = if row.section == last { "" } else { row.section };
            last = row.section;
            let (ceiling, ratio) = if row.ceilings.is_empty() {
                ("".to_owned(), "".to_owned())
            } else {
                let value = row.value.unwrap_or(f64::NAN);
                let c: Vec<String> =
                    row.ceilings.iter().map(|c| format!("{} {} `{}`", num(c.value), c.unit, c.case)).collect();
                let r: Vec<String> = row.ceilings.iter().map(|c| format!("{:.3}", value / c.value)).collect();
                (c.join("<br>"), r.join("<br>"))
            };
            let target = row.target.as_deref().unwrap_or("");
            md.push_str(&format!(
                "| {section} | {} | {} | {target} | {ceiling} | {ratio} |\n",
                row.figure, row.measured
            ));
        }
        if !self.notes.is_empty() {
            md.push('\n');
            for note in &self.notes {
                md.push_str(&format!("- {note}\n"));
            }
        }
        md
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "section": r.section,
                    "figure": r.figure,
                    "measured": r.measured,
                    "target": r.target,
                    "value": r.value,
                    "ceilings": r.ceilings.iter().map(|c| json!({
                        "case": c.case, "value": c.value, "unit": c.unit,
                        "ratio": r.value.map(|v| v / c.value),
                    })).collect::<Vec<_>>(),
                    "extra": r.extra,
                })
            })
            .collect();
        let ceilings: BTreeMap<&String, Value> =
            self.ceilings.cases.iter().map(|(k, c)| (k, json!({"median": c.value, "unit": c.unit}))).collect();
        let mut json = self.json.clone();
        json["rows"] = json!(rows);
        json["ceilings"] =
            json!({"measured_in_this_run": self.ceilings.measured, "source": self.ceilings.source, "cases": ceilings});
        json["header"] = json!(self.header.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>());
        json["notes"] = json!(self.notes);
        json
    }

    /// Writes `<stem>.md` and `<stem>.json`, and the same as `latest.md`/`latest.json`.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<()> {
        let md = self.markdown();
        let json = serde_json::to_string_pretty(&self.to_json())? + "\n";
        for name in [stem, "latest"] {
            std::fs::write(dir.join(format!("{name}.md")), &md)?;
            std::fs::write(dir.join(format!("{name}.json")), &json)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(123.0), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(0.1234), "0.123");
    }
}
