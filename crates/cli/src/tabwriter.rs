//! Elastic tabstops laid out as Go's `text/tabwriter` does with docker's settings
//! (minwidth 10, padding 3, pad with spaces, left aligned): a column's width is decided per
//! block of consecutive lines that have a cell in that column.

/// Lays out `text` (cells separated by tabs, lines by newlines).
pub fn layout(text: &str, minwidth: usize, padding: usize) -> String {
    let mut lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    // A trailing newline leaves one empty line behind; it is printed as nothing.
    let trailing_newline = text.ends_with('\n');
    if trailing_newline {
        lines.pop();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format_block(
        &lines,
        0,
        lines.len(),
        &mut widths,
        minwidth,
        padding,
        &mut out,
    );
    if !trailing_newline && out.ends_with('\n') {
        out.pop();
    }
    out
}

/// docker's table layout.
pub fn docker_table(text: &str) -> String {
    layout(text, 10, 3)
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn format_block(
    lines: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    minwidth: usize,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut w = minwidth;
        while this < line1 && column + 1 < lines[this].len() {
            w = w.max(width(lines[this][column]) + padding);
            this += 1;
        }
        widths.push(w);
        format_block(lines, line0, this, widths, minwidth, padding, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() && j + 1 < line.len() {
                for _ in width(cell)..widths[j] {
                    out.push(' ');
                }
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_ps_header() {
        let text = "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tPORTS\tNAMES\n";
        assert_eq!(
            docker_table(text),
            "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES\n"
        );
    }

    #[test]
    fn widest_cell_wins() {
        let text = "REPOSITORY\tTAG\tIMAGE ID\nbusybox\tlatest\t2c661f76a013\na-much-longer-name\tv1\tabc\n";
        assert_eq!(
            docker_table(text),
            "REPOSITORY           TAG       IMAGE ID\n\
             busybox              latest    2c661f76a013\n\
             a-much-longer-name   v1        abc\n"
        );
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = "COMMAND\tX\n\"sleep…\"\ty\n";
        assert_eq!(docker_table(text), "COMMAND    X\n\"sleep…\"   y\n");
    }

    #[test]
    fn ragged_lines_form_blocks() {
        // The one-cell line ends the first column's block.
        let text = "a\tb\nlonger-than-ten\tc\nplain\nx\ty\n";
        assert_eq!(
            layout(text, 0, 1),
            "a               b\nlonger-than-ten c\nplain\nx y\n"
        );
    }
}
