//! One aligned text table per section: a label column, figure columns, ratio columns.

/// A table under construction.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with `title` and column names (the label column has none).
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        let mut header = vec![String::new()];
        header.extend(columns.iter().map(|c| c.to_string()));
        Table { title: title.into(), header, rows: Vec::new() }
    }

    /// Adds a row; `cells` follow the columns.
    pub fn row(&mut self, label: impl Into<String>, cells: Vec<String>) {
        let mut row = vec![label.into()];
        row.extend(cells);
        self.rows.push(row);
    }

    /// Prints the title, the columns aligned, then `command` (what reproduces the table).
    pub fn print(&self, command: &str) {
        let columns = self.header.len();
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        println!("\n{}", self.title);
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::from(" ");
            for (i, cell) in row.iter().enumerate().take(columns) {
                let pad = widths[i] - cell.chars().count();
                if i == 0 {
                    line.push_str(&format!(" {cell}{}", " ".repeat(pad)));
                } else {
                    line.push_str(&format!("  {}{cell}", " ".repeat(pad)));
                }
            }
            println!("{}", line.trim_end());
        }
        println!("  command: {command}");
    }
}

/// `value` with `decimals` digits and thousands separators; "-" when not finite.
pub fn number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') { "-" } else { "" };
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

/// `a / b` as "1.23x", or "-" when either is missing or `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// The `--` placeholder for a figure that does not apply.
pub fn none() -> String {
    "-".into()
}
