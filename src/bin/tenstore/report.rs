//! Describing tensors for people (a table) and for programs (JSON).

use serde::Serialize;
use sha2::{Digest, Sha256};
use tenstore::TensorView;

/// One tensor, as `--json` prints it.
#[derive(Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub nbytes: usize,
    pub sha256: String,
}

impl TensorInfo {
    pub fn of(v: &TensorView<'_>) -> TensorInfo {
        TensorInfo {
            name: v.name().to_owned(),
            dtype: v.dtype().code().to_owned(),
            shape: v.shape().to_vec(),
            nbytes: v.nbytes(),
            sha256: format!("{:x}", Sha256::digest(v.data())),
        }
    }
}

/// Prints a title line (what, tensor count, data bytes) and the table.
pub fn print_tensors(what: &str, tensors: &[TensorInfo]) {
    let bytes: usize = tensors.iter().map(|t| t.nbytes).sum();
    println!("{what}: {} tensors, {bytes} data bytes", tensors.len());
    print!("{}", table(tensors));
}

/// A table of tensors, one line each, columns aligned.
pub fn table(tensors: &[TensorInfo]) -> String {
    let rows: Vec<[String; 6]> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            [
                i.to_string(),
                if t.name.is_empty() {
                    "-".into()
                } else {
                    t.name.clone()
                },
                t.dtype.clone(),
                format!("{:?}", t.shape),
                t.nbytes.to_string(),
                t.sha256[..16].to_owned(),
            ]
        })
        .collect();
    let header = ["#", "name", "dtype", "shape", "nbytes", "sha256"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Numbers right-aligned, text left-aligned.
            if i == 0 || i == 4 {
                l.push_str(&format!("{cell:>w$}  "));
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    out
}
