//! The one table printer for people (`usb9pfsd status`, `usb9pfsd list`): a
//! header line, one line per row with each column as wide as its widest cell
//! (header included), and under a row the indented notes that explain it
//! (pending changes, errors). Scripts read `--json`, never this text.
//!
//! Layout only: it must never decide what a table says.

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers.
    Right,
}

/// Between two columns.
const GAP: &str = "  ";
/// Before each note under a row.
const NOTE_INDENT: &str = "    ";

/// A table being filled: columns first, then rows.
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Row>,
}

struct Row {
    cells: Vec<String>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row, one cell per column (missing cells print empty, extra
    /// ones not at all); returns the row's notes to add lines to.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Vec<String> {
        self.rows.push(Row { cells, notes: Vec::new() });
        let last = self.rows.len() - 1;
        &mut self.rows[last].notes
    }

    /// The header, each row and its notes, one line each (no trailing
    /// spaces).
    pub fn render(&self) -> String {
        let width = |i: usize| {
            let cells = self.rows.iter().filter_map(|r| r.cells.get(i)).map(|c| c.chars().count());
            cells.chain([self.columns[i].0.chars().count()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let start = out.len();
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.next().unwrap_or("");
                if i > 0 {
                    out.push_str(GAP);
                }
                let pad = w.saturating_sub(cell.chars().count());
                if *align == Align::Right {
                    out.extend(std::iter::repeat(' ').take(pad));
                }
                out.push_str(cell);
                if *align == Align::Left {
                    out.extend(std::iter::repeat(' ').take(pad));
                }
            }
            let end = start + out[start..].trim_end().len();
            out.truncate(end);
            out.push('\n');
        };
        let mut out = String::new();
        line(&mut out, &mut self.columns.iter().map(|(h, _)| *h));
        for r in &self.rows {
            line(&mut out, &mut r.cells.iter().map(String::as_str));
            for n in &r.notes {
                out.push_str(NOTE_INDENT);
                out.push_str(n);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_numbers_line_up_right() {
        let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Right), ("WHERE", Align::Left)]);
        t.row(vec!["a".into(), "7".into(), "here".into()]);
        t.row(vec!["longer-name".into(), "1234".into(), "there and back".into()]).push("a note".into());
        assert_eq!(
            t.render(),
            "NAME            N  WHERE\n\
             a               7  here\n\
             longer-name  1234  there and back\n    \
             a note\n"
        );
    }

    #[test]
    fn missing_cells_print_empty_and_extra_ones_not_at_all() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["x".into()]);
        t.row(vec!["y".into(), "z".into(), "extra".into()]);
        assert_eq!(t.render(), "A  B\nx\ny  z\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["Küche".into(), "1".into()]);
        t.row(vec!["kitch".into(), "2".into()]);
        let r = t.render();
        let cols: Vec<usize> = r.lines().skip(1).map(|l| l.chars().position(|c| c.is_ascii_digit()).unwrap_or(0)).collect();
        assert_eq!(cols, [7, 7], "{r}");
    }
}
