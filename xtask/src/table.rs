//! Plain-text tables for the summaries printed at the end of each command.

/// Renders `rows` under `headers` as an aligned Markdown table.
pub fn markdown(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(headers.to_vec());
    out += &line(widths.iter().map(|_| "").collect::<Vec<_>>()).replace(' ', "-");
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let t = super::markdown(&["a", "bbb"], &[vec!["xx".into(), "y".into()]]);
        assert_eq!(t, "| a  | bbb |\n|----|-----|\n| xx | y   |\n");
    }
}
