//! Reading `pytorch_model.bin`: the zip archive `torch.save` writes (PyTorch >= 1.6).
//!
//! Layout of such an archive (the top folder, here `archive/`, is named after the file and
//! varies, e.g. `pytorch_model/`):
//!
//! ```text
//! archive/data.pkl        pickle of the state dict; tensors reference storages by key
//! archive/byteorder       "little" or "big" (absent in older archives: little)
//! archive/data/<key>      raw bytes of one storage, numel * element size
//! archive/version, archive/.data/...   bookkeeping we do not need
//! ```
//!
//! # Security model
//!
//! `data.pkl` is interpreted by [`super::pickle`], a restricted unpickler that never imports or
//! runs anything the file names: globals are matched against a fixed allow-list and anything
//! else is refused with [`CheckpointError::ForbiddenGlobal`]. This module then treats every
//! number from the pickle and the zip directory as untrusted: storage sizes are checked against
//! the archive size before anything is allocated, every tensor view is bounds-checked against
//! its storage before a byte is copied, and the total size of the tensors is capped relative to
//! the archive so that overlapping views cannot expand a small file into an enormous allocation.
//! Malformed input gives [`CheckpointError::Format`] naming the file and what is wrong.
//!
//! PyTorch stores members uncompressed, so the `zip` crate is used without compression features;
//! a compressed member is refused as unsupported. This also means no member can legitimately be
//! larger than the archive itself, which is what bounds every allocation here.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ir::DType;
use zip::result::ZipError;
use zip::ZipArchive;

use super::pickle::{self, StorageRef, TensorRef};
use super::{CheckpointError, RawTensor};

/// The tensors of an archive may add up to at most this many times the archive's size. Legit
/// checkpoints stay near 1x (2x with tied embeddings saved twice); overlapping or stride-0 views
/// of one storage could otherwise ask for terabytes from a small file.
const MAX_EXPANSION: u64 = 8;

/// The `byteorder` member holds a short word; anything longer is not a byte-order marker.
const MAX_BYTEORDER_LEN: u64 = 16;

/// Reads every tensor of a PyTorch zip checkpoint, in the order of its state dict, as
/// contiguous row-major little-endian bytes.
///
/// Refuses (with the file named in the error): pickle globals outside the allow-list
/// ([`CheckpointError::ForbiddenGlobal`]); storages of dtypes other than f32, f16, bf16, i64,
/// i32 and i8 ([`CheckpointError::DType`], naming the tensor); big-endian archives, pickles that
/// are not a flat dict of tensors, and any malformed or inconsistent content
/// ([`CheckpointError::Format`]).
pub fn read_torch_zip(path: &Path) -> Result<Vec<(String, RawTensor)>, CheckpointError> {
    let mut archive = Archive::open(path)?;
    let prefix = archive.record_prefix()?;
    archive.check_little_endian(&prefix)?;
    let pickle_bytes = archive.read_member(&format!("{prefix}data.pkl"), archive.len)?;
    let tensors = pickle::read_state_dict(&pickle_bytes, path)?;
    let views = tensors.iter().map(|(name, tensor)| View::new(name, tensor, path)).collect::<Result<Vec<_>, _>>()?;
    archive.check_total_size(&views)?;
    let mut data = archive.read_views(&prefix, &views)?;
    let mut out = Vec::with_capacity(tensors.len());
    for ((name, _), (view, bytes)) in tensors.into_iter().zip(views.into_iter().zip(data.iter_mut())) {
        let data = bytes.take().ok_or_else(|| archive.format(format!("tensor `{name}` was not read (internal error)")))?;
        out.push((name, RawTensor { dtype: view.dtype, shape: view.shape, data }));
    }
    Ok(out)
}

// -------------------------------------------------------------------------------------------------
// Tensor views
// -------------------------------------------------------------------------------------------------

/// A tensor whose view of its storage has been checked: every element it addresses lies inside
/// the storage, so gathering it needs no further validation and cannot overflow.
#[derive(Debug)]
struct View {
    name: String,
    dtype: DType,
    storage: StorageRef,
    /// Bytes per element.
    element_size: usize,
    /// Storage offset, in elements.
    offset: usize,
    shape: Vec<usize>,
    /// Strides, in elements.
    stride: Vec<usize>,
    numel: usize,
}

impl View {
    /// Checks the dtype and that the strided view `tensor` stays inside its storage.
    fn new(name: &str, tensor: &TensorRef, path: &Path) -> Result<View, CheckpointError> {
        let format = |detail: String| CheckpointError::Format { path: path.to_path_buf(), detail: format!("tensor `{name}`: {detail}") };
        let dtype = tensor.storage.dtype.to_ir().ok_or_else(|| CheckpointError::DType {
            path: path.to_path_buf(),
            name: name.to_string(),
            dtype: tensor.storage.dtype.name().to_string(),
        })?;
        let (shape, stride, offset) = (&tensor.shape, &tensor.stride, tensor.storage_offset);
        let numel = checked_product(shape).ok_or_else(|| format(format!("shape {shape:?} overflows")))?;
        let storage_numel = tensor.storage.numel;
        if numel > 0 {
            let last =
                last_element(offset, shape, stride).ok_or_else(|| format(format!("offset {offset} and strides {stride:?} overflow")))?;
            if last as u64 >= storage_numel {
                return Err(format(format!(
                    "view (offset {offset}, shape {shape:?}, stride {stride:?}) reaches element {last} of a storage of {storage_numel} elements"
                )));
            }
        }
        if numel as u64 > storage_numel {
            return Err(format(format!(
                "shape {shape:?} has {numel} elements but its storage only {storage_numel}: overlapping (broadcast) views are not supported"
            )));
        }
        Ok(View {
            name: name.to_string(),
            dtype,
            storage: tensor.storage.clone(),
            element_size: dtype.size_bytes(),
            offset,
            shape: shape.clone(),
            stride: stride.clone(),
            numel,
        })
    }

    /// Bytes of the materialised tensor (fits: `numel <= storage numel` and storages are
    /// checked against the archive size before reading).
    fn byte_len(&self) -> u64 {
        self.numel as u64 * self.element_size as u64
    }

    /// Whether the elements are laid out row-major without gaps (dimensions of size 1 may have
    /// any stride), so the tensor is one slice of its storage.
    fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&size, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(size);
        }
        true
    }

    /// Whether the tensor is exactly its whole storage, so the storage buffer can be reused.
    fn is_whole(&self, storage: &[u8]) -> bool {
        self.offset == 0 && self.is_contiguous() && self.byte_len() == storage.len() as u64
    }

    /// Copies the view's elements out of `storage` into a new row-major buffer. `None` only if
    /// `storage` is shorter than the checked storage size (callers make sure it is not).
    fn gather(&self, storage: &[u8]) -> Option<Vec<u8>> {
        let element = self.element_size;
        if self.numel == 0 {
            return Some(Vec::new());
        }
        if self.is_contiguous() {
            return storage.get(self.offset * element..(self.offset + self.numel) * element).map(<[u8]>::to_vec);
        }
        // Walk the outer dimensions like an odometer and copy the innermost dimension as one run
        // when it is unit-strided (e.g. a row slice), element by element otherwise (transposes).
        let (&inner_len, outer_shape) = self.shape.split_last()?;
        let (&inner_stride, outer_stride) = self.stride.split_last()?;
        let mut out = Vec::with_capacity(self.numel * element);
        let mut index = vec![0usize; outer_shape.len()];
        loop {
            let base = self.offset + index.iter().zip(outer_stride).map(|(i, s)| i * s).sum::<usize>();
            if inner_stride == 1 {
                out.extend_from_slice(storage.get(base * element..(base + inner_len) * element)?);
            } else {
                for j in 0..inner_len {
                    let at = (base + j * inner_stride) * element;
                    out.extend_from_slice(storage.get(at..at + element)?);
                }
            }
            if !advance(&mut index, outer_shape) {
                return Some(out);
            }
        }
    }
}

/// The product of `dims`, or `None` on overflow.
fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Storage index of the last element of a non-empty view: `offset + sum((size - 1) * stride)`.
fn last_element(offset: usize, shape: &[usize], stride: &[usize]) -> Option<usize> {
    shape.iter().zip(stride).try_fold(offset, |acc, (&size, &stride)| acc.checked_add(size.saturating_sub(1).checked_mul(stride)?))
}

/// Increments a row-major multi-index over `shape`; `false` once it wraps around to all zeros.
fn advance(index: &mut [usize], shape: &[usize]) -> bool {
    for (i, &size) in index.iter_mut().zip(shape).rev() {
        *i += 1;
        if *i < size {
            return true;
        }
        *i = 0;
    }
    false
}

// -------------------------------------------------------------------------------------------------
// The archive
// -------------------------------------------------------------------------------------------------

/// An open zip archive and what errors need to name it.
struct Archive {
    path: PathBuf,
    /// Size of the archive file in bytes: the bound for every member we read.
    len: u64,
    zip: ZipArchive<BufReader<File>>,
}

impl Archive {
    fn open(path: &Path) -> Result<Archive, CheckpointError> {
        let io_error = |source| CheckpointError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        let zip = ZipArchive::new(BufReader::new(file)).map_err(|e| match e {
            ZipError::Io(source) => io_error(source),
            other => CheckpointError::Format {
                path: path.to_path_buf(),
                detail: format!("not a PyTorch zip archive ({other}); the legacy non-zip torch.save format (torch < 1.6) is not supported"),
            },
        })?;
        Ok(Archive { path: path.to_path_buf(), len, zip })
    }

    fn format(&self, detail: String) -> CheckpointError {
        CheckpointError::Format { path: self.path.clone(), detail }
    }

    /// The archive's top folder with its trailing slash (`archive/`), found as the one folder
    /// holding a `data.pkl`.
    fn record_prefix(&self) -> Result<String, CheckpointError> {
        let mut prefixes: Vec<&str> = self
            .zip
            .file_names()
            .filter_map(|name| name.strip_suffix("data.pkl"))
            .filter(|prefix| prefix.ends_with('/') && prefix.matches('/').count() == 1)
            .collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        match prefixes.as_slice() {
            [prefix] => Ok(prefix.to_string()),
            [] => Err(self.format("no `<folder>/data.pkl` member: not a PyTorch zip checkpoint".to_string())),
            many => Err(self.format(format!("several `data.pkl` members ({}): ambiguous checkpoint", many.join("data.pkl, ")))),
        }
    }

    /// Refuses big-endian archives; an archive without a `byteorder` member is little-endian.
    fn check_little_endian(&mut self, prefix: &str) -> Result<(), CheckpointError> {
        let member = format!("{prefix}byteorder");
        if self.zip.index_for_name(&member).is_none() {
            return Ok(());
        }
        let bytes = self.read_member(&member, MAX_BYTEORDER_LEN)?;
        match String::from_utf8_lossy(&bytes).trim() {
            "little" => Ok(()),
            "big" => Err(self.format("big-endian archive (byteorder = big) is not supported".to_string())),
            other => Err(self.format(format!("`{member}` says {other:?}, expected \"little\""))),
        }
    }

    /// The whole content of `member`, which may hold at most `limit` bytes.
    fn read_member(&mut self, member: &str, limit: u64) -> Result<Vec<u8>, CheckpointError> {
        let path = self.path.clone();
        let format = |detail: String| CheckpointError::Format { path: path.clone(), detail };
        let entry = match self.zip.by_name(member) {
            Ok(entry) => entry,
            Err(ZipError::FileNotFound) => return Err(format(format!("archive has no member `{member}`"))),
            Err(ZipError::Io(source)) => return Err(CheckpointError::Io { path: path.clone(), source }),
            Err(other) => return Err(format(format!("member `{member}`: {other}"))),
        };
        let claimed = entry.size();
        if claimed > limit {
            return Err(format(format!("member `{member}` claims {claimed} bytes, more than the {limit} possible")));
        }
        // `claimed <= limit <= archive size`, so this capacity is backed by real bytes.
        let mut bytes = Vec::with_capacity(usize::try_from(claimed).unwrap_or(0));
        entry.take(limit).read_to_end(&mut bytes).map_err(|e| format(format!("reading member `{member}`: {e}")))?;
        Ok(bytes)
    }

    /// Refuses views that together would need far more memory than the archive holds.
    fn check_total_size(&self, views: &[View]) -> Result<(), CheckpointError> {
        let total = views.iter().fold(0u64, |sum, view| sum.saturating_add(view.byte_len()));
        let cap = self.len.saturating_mul(MAX_EXPANSION);
        if total > cap {
            return Err(self.format(format!(
                "the tensors add up to {total} bytes, more than {MAX_EXPANSION}x the {}-byte archive: views overlap suspiciously",
                self.len
            )));
        }
        Ok(())
    }

    /// Materialises every view, reading each storage once (in order of first use) and releasing
    /// it before the next, so peak memory is the output plus one storage. Returns the bytes in
    /// the order of `views`.
    fn read_views(&mut self, prefix: &str, views: &[View]) -> Result<Vec<Option<Vec<u8>>>, CheckpointError> {
        let mut out: Vec<Option<Vec<u8>>> = views.iter().map(|_| None).collect();
        for (storage, users) in group_by_storage(views) {
            self.check_same_storage(storage, &users, views)?;
            let bytes = self.read_storage(prefix, storage)?;
            if let [only] = users.as_slice() {
                if let Some(view) = views.get(*only) {
                    if view.is_whole(&bytes) {
                        set(&mut out, *only, bytes); // Sole user of the whole storage: no copy.
                        continue;
                    }
                }
            }
            for &user in &users {
                let view = views.get(user).ok_or_else(|| self.format("internal error: bad view index".to_string()))?;
                let data = view.gather(&bytes).ok_or_else(|| self.format(format!("tensor `{}`: storage too short", view.name)))?;
                set(&mut out, user, data);
            }
        }
        Ok(out)
    }

    /// All views of one storage key must agree on its dtype and size, as they do in files torch
    /// writes (it refuses to save one storage viewed as two dtypes).
    fn check_same_storage(&self, storage: &StorageRef, users: &[usize], views: &[View]) -> Result<(), CheckpointError> {
        for view in users.iter().filter_map(|&i| views.get(i)) {
            if view.storage != *storage {
                return Err(self.format(format!(
                    "storage `{}` is described inconsistently: {:?} for tensor `{}` vs {storage:?}",
                    storage.key, view.storage, view.name
                )));
            }
        }
        Ok(())
    }

    /// The bytes of `storage` (`<prefix>data/<key>`), exactly `numel * element size` of them.
    fn read_storage(&mut self, prefix: &str, storage: &StorageRef) -> Result<Vec<u8>, CheckpointError> {
        let member = format!("{prefix}data/{}", storage.key);
        let expected = storage.numel.checked_mul(storage.dtype.size_bytes() as u64).filter(|&n| n <= self.len).ok_or_else(|| {
            self.format(format!(
                "storage `{member}` claims {} {} elements, more than the {}-byte archive holds",
                storage.numel,
                storage.dtype.name(),
                self.len
            ))
        })?;
        let mut bytes = self.read_member(&member, self.len)?;
        if (bytes.len() as u64) < expected {
            return Err(self.format(format!("storage `{member}` has {} bytes, expected {expected}", bytes.len())));
        }
        bytes.truncate(expected as usize);
        Ok(bytes)
    }
}

/// Stores a tensor's bytes at its index (indices come from `views`, so they are in range).
fn set(out: &mut [Option<Vec<u8>>], index: usize, data: Vec<u8>) {
    if let Some(slot) = out.get_mut(index) {
        *slot = Some(data);
    }
}

/// Indices of the views of each storage key, keys in order of first use.
fn group_by_storage(views: &[View]) -> Vec<(&StorageRef, Vec<usize>)> {
    let mut groups: Vec<(&StorageRef, Vec<usize>)> = Vec::new();
    let mut group_of_key: HashMap<&str, usize> = HashMap::new();
    for (index, view) in views.iter().enumerate() {
        let group = *group_of_key.entry(view.storage.key.as_str()).or_insert_with(|| {
            groups.push((&view.storage, Vec::new()));
            groups.len() - 1
        });
        if let Some((_, users)) = groups.get_mut(group) {
            users.push(index);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::pickle::test_pickles::{state_dict, Entry, Writer};
    use super::*;

    /// Writes a STORED zip with the given members (what torch.save produces) into `dir`.
    fn write_archive(dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("pytorch_model.bin");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn f32_values(tensor: &RawTensor) -> Vec<f32> {
        assert_eq!(tensor.dtype, DType::F32);
        tensor.to_f32().unwrap()
    }

    /// A 2x3 f32 tensor, its transpose (a non-contiguous view of the same storage), a row slice
    /// with an offset, a transposed view of its own storage, and an f16 vector.
    fn sample_archive(dir: &Path) -> PathBuf {
        let pickle = state_dict(&[
            Entry { name: "m", storage_class: "FloatStorage", key: "0", numel: 6, offset: 0, shape: &[2, 3], stride: &[3, 1] },
            Entry { name: "m.T", storage_class: "FloatStorage", key: "0", numel: 6, offset: 0, shape: &[3, 2], stride: &[1, 3] },
            Entry { name: "row1", storage_class: "FloatStorage", key: "0", numel: 6, offset: 3, shape: &[3], stride: &[1] },
            Entry { name: "t", storage_class: "FloatStorage", key: "1", numel: 6, offset: 0, shape: &[3, 2], stride: &[1, 3] },
            Entry { name: "h", storage_class: "HalfStorage", key: "2", numel: 2, offset: 0, shape: &[2], stride: &[1] },
        ]);
        let half: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        write_archive(
            dir,
            &[
                ("archive/data.pkl", &pickle),
                ("archive/byteorder", b"little"),
                ("archive/data/0", &f32_bytes(&[0., 1., 2., 3., 4., 5.])),
                ("archive/data/1", &f32_bytes(&[10., 11., 12., 13., 14., 15.])),
                ("archive/data/2", &half),
                ("archive/version", b"3\n"),
            ],
        )
    }

    #[test]
    fn reads_contiguous_and_strided_tensors_in_dict_order() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = read_torch_zip(&sample_archive(dir.path())).unwrap();
        let names: Vec<_> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["m", "m.T", "row1", "t", "h"]);
        let by_name: HashMap<_, _> = tensors.into_iter().collect();
        assert_eq!(by_name["m"].shape, [2, 3]);
        assert_eq!(f32_values(&by_name["m"]), [0., 1., 2., 3., 4., 5.]);
        assert_eq!(by_name["m.T"].shape, [3, 2]);
        assert_eq!(f32_values(&by_name["m.T"]), [0., 3., 1., 4., 2., 5.]);
        assert_eq!(f32_values(&by_name["row1"]), [3., 4., 5.]);
        assert_eq!(f32_values(&by_name["t"]), [10., 13., 11., 14., 12., 15.]);
        assert_eq!(by_name["h"].dtype, DType::F16);
        assert_eq!(by_name["h"].to_f32().unwrap(), [1.5, -2.0]);
    }

    #[test]
    fn gathers_higher_rank_views_with_unit_inner_stride() {
        // A [2, 2, 2] view of a 3x3x2 storage that skips its middle row: inner runs, outer gaps.
        let storage: Vec<f32> = (0..18).map(|v| v as f32).collect();
        let pickle = state_dict(&[Entry {
            name: "x",
            storage_class: "FloatStorage",
            key: "0",
            numel: 18,
            offset: 2,
            shape: &[2, 2, 2],
            stride: &[6, 4, 1],
        }]);
        let dir = tempfile::tempdir().unwrap();
        let path = write_archive(dir.path(), &[("a/data.pkl", &pickle), ("a/data/0", &f32_bytes(&storage))]);
        let tensors = read_torch_zip(&path).unwrap();
        assert_eq!(f32_values(&tensors[0].1), [2., 3., 6., 7., 8., 9., 12., 13.]);
    }

    fn expect_format(path: &Path) -> String {
        match read_torch_zip(path) {
            Err(CheckpointError::Format { path: p, detail }) => {
                assert_eq!(p, path);
                detail
            }
            other => panic!("expected a Format error, got {other:?}"),
        }
    }

    fn one_tensor_archive(dir: &Path, entry: Entry, storage: &[u8]) -> PathBuf {
        let pickle = state_dict(&[entry]);
        write_archive(dir, &[("a/data.pkl", &pickle), ("a/data/0", storage)])
    }

    #[test]
    fn unsupported_dtypes_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry { name: "d", storage_class: "DoubleStorage", key: "0", numel: 1, offset: 0, shape: &[1], stride: &[1] };
        let path = one_tensor_archive(dir.path(), entry, &1.0f64.to_le_bytes());
        match read_torch_zip(&path) {
            Err(CheckpointError::DType { name, dtype, .. }) => assert_eq!((name.as_str(), dtype.as_str()), ("d", "float64")),
            other => panic!("expected DType, got {other:?}"),
        }
        let entry = Entry { name: "mask", storage_class: "BoolStorage", key: "0", numel: 1, offset: 0, shape: &[1], stride: &[1] };
        let path = one_tensor_archive(dir.path(), entry, &[1]);
        assert!(matches!(read_torch_zip(&path), Err(CheckpointError::DType { name, .. }) if name == "mask"));
    }

    #[test]
    fn integer_storages_load() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry { name: "ids", storage_class: "LongStorage", key: "0", numel: 2, offset: 0, shape: &[2], stride: &[1] };
        let bytes: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = read_torch_zip(&one_tensor_archive(dir.path(), entry, &bytes)).unwrap();
        assert_eq!(tensors[0].1, RawTensor { dtype: DType::I64, shape: vec![2], data: bytes });
    }

    #[test]
    fn forbidden_globals_name_the_archive() {
        let mut w = Writer::default();
        w.op(0x80).op(2).global("os", "system").op(b'(').str("touch /tmp/pwned").op(b't').op(b'R').op(b'.');
        let dir = tempfile::tempdir().unwrap();
        let path = write_archive(dir.path(), &[("a/data.pkl", &w.bytes)]);
        match read_torch_zip(&path) {
            Err(CheckpointError::ForbiddenGlobal { path: p, module, name }) => {
                assert_eq!((p.as_path(), module.as_str(), name.as_str()), (path.as_path(), "os", "system"));
            }
            other => panic!("expected ForbiddenGlobal, got {other:?}"),
        }
    }

    #[test]
    fn malformed_archives_are_format_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f32_entry =
            |offset, shape, stride| Entry { name: "w", storage_class: "FloatStorage", key: "0", numel: 4, offset, shape, stride };

        // View past the end of its storage.
        let path = one_tensor_archive(dir.path(), f32_entry(1, &[4], &[1]), &f32_bytes(&[0.; 4]));
        assert!(expect_format(&path).contains("reaches element 4"));
        // Storage member shorter than the pickle says.
        let path = one_tensor_archive(dir.path(), f32_entry(0, &[4], &[1]), &f32_bytes(&[0.; 3]));
        assert!(expect_format(&path).contains("expected 16"));
        // Broadcast view: more elements than the storage.
        let path = one_tensor_archive(dir.path(), f32_entry(0, &[100, 4], &[0, 1]), &f32_bytes(&[0.; 4]));
        assert!(expect_format(&path).contains("overlapping"));
        // Missing storage member.
        let pickle = state_dict(&[f32_entry(0, &[4], &[1])]);
        let path = write_archive(dir.path(), &[("a/data.pkl", &pickle)]);
        assert!(expect_format(&path).contains("a/data/0"));
        // Big-endian archive.
        let path = write_archive(dir.path(), &[("a/data.pkl", &pickle), ("a/byteorder", b"big"), ("a/data/0", &[0; 16])]);
        assert!(expect_format(&path).contains("big-endian"));
        // No data.pkl; ambiguous data.pkl.
        let path = write_archive(dir.path(), &[("a/data/0", &[0; 16])]);
        assert!(expect_format(&path).contains("data.pkl"));
        let path = write_archive(dir.path(), &[("a/data.pkl", &pickle), ("b/data.pkl", &pickle)]);
        assert!(expect_format(&path).contains("ambiguous"));
        // Truncated pickle inside a valid archive.
        let path = write_archive(dir.path(), &[("a/data.pkl", &pickle[..pickle.len() / 2]), ("a/data/0", &[0; 16])]);
        assert!(expect_format(&path).contains("pickle"));
        // Not a zip at all, and a truncated zip.
        let path = dir.path().join("junk.bin");
        std::fs::write(&path, b"\x80\x02not a zip").unwrap();
        assert!(expect_format(&path).contains("not a PyTorch zip"));
        let good = std::fs::read(sample_archive(dir.path())).unwrap();
        for cut in [good.len() / 3, good.len() - 10] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(read_torch_zip(&path).is_err());
        }
    }

    #[test]
    fn storage_sizes_are_checked_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let huge = Entry { name: "w", storage_class: "FloatStorage", key: "0", numel: i32::MAX, offset: 0, shape: &[4], stride: &[1] };
        let path = one_tensor_archive(dir.path(), huge, &f32_bytes(&[0.; 4]));
        assert!(expect_format(&path).contains("more than the"));
    }

    #[test]
    fn many_views_of_one_storage_cannot_expand_without_bound() {
        let storage = f32_bytes(&vec![0.5; 4096]);
        let names: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let entries: Vec<Entry> = names
            .iter()
            .map(|name| Entry { name, storage_class: "FloatStorage", key: "0", numel: 4096, offset: 0, shape: &[4096], stride: &[1] })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = write_archive(dir.path(), &[("a/data.pkl", &state_dict(&entries)), ("a/data/0", &storage)]);
        assert!(expect_format(&path).contains("add up to"));
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let path = Path::new("/nonexistent/quamba/pytorch_model.bin");
        assert!(matches!(read_torch_zip(path), Err(CheckpointError::Io { path: p, .. }) if p == path));
    }

    /// FNV-1a 64, to compare a whole checkpoint with a digest computed independently in Python
    /// (stdlib `zipfile` + a `find_class`-restricted `pickle.Unpickler` + `struct`).
    fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
        hash
    }

    #[test]
    fn reads_the_real_mamba1_tiny_checkpoint() {
        let path = Path::new("/work/shared/models/mamba1-tiny-ss/pytorch_model.bin");
        if !path.exists() {
            eprintln!("skipping: {} is absent", path.display());
            return;
        }
        let tensors = read_torch_zip(path).unwrap();
        assert_eq!(tensors.len(), 42);
        let (name, embedding) = &tensors[0];
        assert_eq!(name, "backbone.embedding.weight");
        assert_eq!((embedding.dtype, embedding.shape.as_slice()), (DType::F32, [8192, 128].as_slice()));
        let bits = |t: &RawTensor, i: usize| u32::from_le_bytes(t.data[4 * i..4 * i + 4].try_into().unwrap());
        let expected_embedding = [0xbe992067, 0xbe2fbaa7, 0x3e37f26a, 0xbe4cee49];
        assert_eq!((0..4).map(|i| bits(embedding, i)).collect::<Vec<_>>(), expected_embedding);
        assert_eq!(bits(embedding, 8192 * 128 - 1), 0xbce7bb8e);

        let (name, a_log) = &tensors[2];
        assert_eq!(name, "backbone.layers.0.mixer.A_log");
        assert_eq!((a_log.dtype, a_log.shape.as_slice()), (DType::F32, [256, 16].as_slice()));
        assert_eq!((0..4).map(|i| bits(a_log, i)).collect::<Vec<_>>(), [0xba3000b0, 0x3f1dc232, 0x3f48028b, 0x3f910c3d]);
        assert_eq!(bits(a_log, 256 * 16 - 1), 0x4010b94a);
        assert_eq!(tensors[41].0, "backbone.norm_f.weight");

        // Every name, shape and value, digested the same way as the Python reference did.
        let mut digest = 0xcbf2_9ce4_8422_2325u64;
        for (name, tensor) in &tensors {
            digest = fnv1a(digest, name.as_bytes());
            for &dim in &tensor.shape {
                digest = fnv1a(digest, &(dim as u64).to_le_bytes());
            }
            digest = fnv1a(digest, &tensor.data);
        }
        assert_eq!(digest, 0x5d86_9cdd_db10_6d85);
    }
}
