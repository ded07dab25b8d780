//! Reading tensors from what the user names: `.npy` files, `.ten` files,
//! `-` for a tenbin buffer on stdin.

use std::io::Read;
use std::path::Path;

use tenstore::Tensor;

/// The tensors of one input argument: `PATH.npy`, `NAME=PATH.npy`,
/// `PATH.ten` or `-`.
pub fn read_input(arg: &str) -> Result<Vec<Tensor>, Box<dyn std::error::Error>> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading stdin: {e}"))?;
        let views = tenstore::decode_buffer(&buf).map_err(|e| format!("stdin: {e}"))?;
        return Ok(views
            .iter()
            .map(|v| v.to_tensor())
            .collect::<Result<_, _>>()?);
    }
    let (name, path) = match arg.split_once('=') {
        Some((n, p)) if !n.is_empty() && !n.contains('/') => (Some(n), p),
        _ => (None, arg),
    };
    let path = Path::new(path);
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let name = name.map(str::to_owned).unwrap_or_else(|| stem(path));
            check_name(&name, path)?;
            Ok(vec![read_npy(&name, path)?])
        }
        Some("ten") if name.is_none() => read_ten(path),
        _ => Err(format!(
            "{arg}: inputs are PATH.npy, NAME=PATH.npy, PATH.ten or - (a tenbin buffer on stdin)"
        )
        .into()),
    }
}

/// The file name up to its first dot.
pub fn stem(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.split('.').next().unwrap_or_default().to_owned()
}

/// Refuses a tensor name the format cannot hold, with a hint.
pub fn check_name(name: &str, path: &Path) -> Result<(), String> {
    if name.len() > 8 || !name.is_ascii() || name.contains('\0') {
        return Err(format!(
            "{}: tensor name {name:?} is too long or not ASCII (names are at most 8 ASCII bytes); give one with NAME={}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// One `.npy` file as a tensor.
pub fn read_npy(name: &str, path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    tenstore::npy::from_bytes(name, &bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// All tensors of a `.ten` file.
pub fn read_ten(path: &Path) -> Result<Vec<Tensor>, Box<dyn std::error::Error>> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut stream = std::io::BufReader::with_capacity(1 << 16, file);
    Ok(tenstore::read_all(&mut stream).map_err(|e| format!("{}: {e}", path.display()))?)
}
