//! The result table: each figure beside its reference from the same run, the
//! ratio, the target and whether it was met.

use std::fmt::Write as _;

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Target met.
    Pass,
    /// Target missed (reported, not a failure of the run).
    Miss,
    /// No target: the figure is information.
    Info,
}

impl Status {
    /// `PASS` when `ok`, else `MISS`.
    pub fn of(ok: bool) -> Self {
        if ok {
            Status::Pass
        } else {
            Status::Miss
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Miss => "MISS",
            Status::Info => "info",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The measured value with its unit.
    pub value: String,
    /// The reference measured in the same run, with what it is.
    pub reference: String,
    /// value / reference, when the two are comparable.
    pub ratio: String,
    /// The target from the issue.
    pub target: String,
    /// Met or not.
    pub status: Status,
}

impl Row {
    /// A row without reference or target.
    pub fn info(figure: impl Into<String>, value: impl Into<String>) -> Self {
        Row {
            figure: figure.into(),
            value: value.into(),
            reference: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
            status: Status::Info,
        }
    }
}

/// Requests per second, human readable.
pub fn rate(x: f64) -> String {
    format!("{x:.0}/s")
}

/// Milliseconds, three significant decimals.
pub fn ms(x: f64) -> String {
    format!("{x:.3} ms")
}

/// Kilobytes as MB.
pub fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// "1 thread", "2 threads".
pub fn threads(n: usize) -> String {
    if n == 1 { "1 thread".into() } else { format!("{n} threads") }
}

/// `a / b` as a percentage.
pub fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.0}%", 100.0 * a / b)
    } else {
        "-".into()
    }
}

/// `a / b` as a factor.
pub fn times(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// Renders rows as a Markdown table (readable in a terminal, pasteable in docs).
pub fn table(rows: &[Row]) -> String {
    let head = ["figure", "value", "reference (same run)", "ratio", "target", "status"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.clone(),
                r.value.clone(),
                r.reference.clone(),
                r.ratio.clone(),
                r.target.clone(),
                r.status.as_str().to_string(),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::from("|");
        for (i, x) in c.iter().enumerate() {
            let _ = write!(s, " {x:<width$} |", width = w[i]);
        }
        s
    };
    let mut out = line(&head.map(String::from));
    out.push('\n');
    out.push('|');
    for x in w {
        out.push_str(&"-".repeat(x + 2));
        out.push('|');
    }
    for c in &cells {
        out.push('\n');
        out.push_str(&line(c));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_shows_status() {
        let rows = vec![
            Row {
                figure: "x".into(),
                value: rate(1234.4),
                reference: "raw 2000/s".into(),
                ratio: pct(1234.4, 2000.0),
                target: ">= 50%".into(),
                status: Status::of(true),
            },
            Row::info("idle", mb(20480)),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
        assert!(lines[2].contains("1234/s") && lines[2].contains("62%") && lines[2].contains("PASS"));
        assert!(lines[3].contains("20.0 MB") && lines[3].contains("info"));
    }
}
