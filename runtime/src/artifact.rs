//! The `.qmb` artifact: one file holding a compiled model — the graph, every weight in its
//! storage dtype, and what the compiler decided (target, kernel plan, model config).
//!
//! # Byte layout (format version 1)
//!
//! All integers are little-endian. `N` is the file length.
//!
//! | offset          | size      | content                                                                                  |
//! |-----------------|-----------|------------------------------------------------------------------------------------------|
//! | 0               | 8         | magic `b"QMBA\0\r\n\x1a"` ([`MAGIC`])                                                    |
//! | 8               | 4         | format version, `u32` ([`FORMAT_VERSION`] = 1)                                           |
//! | 12              | 8         | header length `H`, `u64` (at most [`MAX_HEADER_BYTES`])                                  |
//! | 20              | `H`       | header: [`ArtifactHeader`] encoded by serde + bincode 2 with `bincode::config::legacy()` (fixed-width little-endian integers, `u64` length prefixes for strings and sequences) |
//! | 20 + `H`        | 0 – 63    | zero padding up to `D = align64(20 + H)`                                                 |
//! | `D`             | …         | weight blobs, in weight-table order (`@0`, `@1`, …); blob *i* starts at the absolute file offset `weights[i].offset` (a multiple of [`ALIGN`] = 64) and is `weights[i].bytes` long; zero padding between blobs |
//! | `N - 4`         | 4         | checksum: CRC-32 (IEEE 802.3 / zlib polynomial, as `crc32fast` computes it) of bytes `0 .. N - 4`, `u32` |
//!
//! The checksum follows the last blob directly (or `D` when there are no weights): a reader
//! rejects any byte that no field accounts for.
//!
//! ## Blob encodings, by the weight's declared dtype
//!
//! | dtype       | bytes per element | encoding                                                                     |
//! |-------------|-------------------|------------------------------------------------------------------------------|
//! | `f32`       | 4                 | IEEE binary32                                                                |
//! | `f16`       | 2                 | IEEE binary16                                                                |
//! | `bf16`      | 2                 | bfloat16                                                                     |
//! | `i8`        | 1                 | two's complement                                                             |
//! | `i4`        | ½                 | two per byte: element `2k` in the low nibble, `2k + 1` in the high nibble, 4-bit two's complement; an odd count leaves the last high nibble zero |
//! | `i32`/`i64` | 4 / 8             | two's complement                                                             |
//!
//! Values are row-major in the declared shape. A blob's `bytes` is exactly what its dtype and
//! element count need (`ceil(n / 2)` for i4).
//!
//! # Why this shape
//!
//! - **Aligned blobs.** Every blob starts at a 64-byte boundary (cache line, and enough for any
//!   SIMD or DMA load), in its final storage dtype, so a future runtime can memory-map the file and
//!   hand blob slices to kernels directly, without copying or unpacking. Today
//!   [`read_artifact`] reads the whole file and widens every weight to f32 for the FP32 executor;
//!   mapping it instead is a later change that does not need a format change.
//! - **Checksum.** A truncated copy or a flipped bit fails loudly at load time instead of
//!   producing a model that runs and is quietly wrong. The reader checks the magic and the format
//!   version *before* the checksum, so an artifact from another format version is reported as
//!   such (and not as corrupt).
//! - **Hostile input.** Every length and offset read from a file is checked with checked
//!   arithmetic against the file's size, and the header is decoded with a size limit: a malformed
//!   file gives an [`ArtifactError`], never a panic or a huge allocation.
//! - **Atomic write.** [`write_artifact`] writes a temporary file next to the destination, fsyncs
//!   it and renames it over the destination, so a reader (or a crash) sees either the old artifact
//!   or the complete new one, never a half-written file.
//! - **Magic.** `\r\n` and `\x1a` (as in PNG's signature) catch files mangled by text-mode
//!   transfers, and the NUL keeps tools from taking the file for text.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use half::{bf16, f16};
use ir::{DType, Graph, WeightDecl, WeightId};
use serde::{Deserialize, Serialize};

use crate::weights::{WeightData, Weights};

/// The first 8 bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"QMBA\0\r\n\x1a";
/// The format version this runtime writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Every blob starts at a file offset that is a multiple of this.
pub const ALIGN: u64 = 64;
/// The largest header a reader accepts (the graph text of a large model is a few MiB).
pub const MAX_HEADER_BYTES: usize = 256 << 20;

/// Magic + version + header length.
const PREFIX_BYTES: usize = 20;
/// The trailing CRC-32.
const CHECKSUM_BYTES: usize = 4;

/// The artifact header: everything but the weight data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactHeader {
    /// The format version (equal to the one in the fixed prefix).
    pub format_version: u32,
    /// The version of the quambac that wrote the artifact.
    pub compiler_version: String,
    /// The compilation target, e.g. `orin-w4a8`.
    pub target: String,
    /// The model family, the graph's (`mamba1` / `mamba2`).
    pub family: String,
    /// The compiler's model config as JSON; opaque to the runtime.
    pub model_config_json: String,
    /// Kernel names in execution order; opaque to this module.
    pub kernel_plan: Vec<String>,
    /// The graph in the IR text form ([`ir::parse()`] reads it back).
    pub graph_text: String,
    /// One entry per graph weight, in weight-table order.
    pub weights: Vec<BlobInfo>,
}

/// Where one weight's data lies in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// The weight's name (as declared in the graph).
    pub name: String,
    /// The storage dtype's text-form name (`f32`, `i4`, ...), equal to the graph declaration's.
    pub dtype: String,
    /// The weight's shape.
    pub shape: Vec<u64>,
    /// Absolute file offset of the first byte, a multiple of [`ALIGN`].
    pub offset: u64,
    /// Length in bytes.
    pub bytes: u64,
}

/// The header fields the compiler chooses; the rest comes from the graph and the weights.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactMeta {
    /// The writing compiler's version (e.g. `env!("CARGO_PKG_VERSION")`).
    pub compiler_version: String,
    /// The compilation target, e.g. `orin-w4a8`; must not be empty.
    pub target: String,
    /// The compiler's model config as JSON.
    pub model_config_json: String,
    /// Kernel names in execution order.
    pub kernel_plan: Vec<String>,
}

/// A loaded artifact.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The header as stored.
    pub header: ArtifactHeader,
    /// The graph, parsed from `header.graph_text` (not yet verified: call [`ir::verify()`]).
    pub graph: Graph,
    /// Every weight widened to f32 (i4 sign-extended), indexed like the graph's weight table.
    pub weights: Weights,
}

/// Why an artifact could not be written or read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file system refused.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The artifact's path.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the artifact magic.
    #[error("{}: not a quamba artifact", path.display())]
    NotAnArtifact {
        /// The artifact's path.
        path: PathBuf,
    },
    /// The file is of a format version this runtime does not read.
    #[error("{}: format version {found}, this runtime reads {FORMAT_VERSION} — recompile with this quambac", path.display())]
    Version {
        /// The artifact's path.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The stored checksum does not match the content.
    #[error("{}: checksum mismatch: the file is corrupt or truncated (stored {stored:#010x}, computed {computed:#010x})", path.display())]
    Checksum {
        /// The artifact's path.
        path: PathBuf,
        /// The CRC-32 stored in the file.
        stored: u32,
        /// The CRC-32 of the content.
        computed: u32,
    },
    /// The artifact was compiled for another target.
    #[error("{}: compiled for {found}, not {expected}", path.display())]
    Target {
        /// The artifact's path.
        path: PathBuf,
        /// The artifact's target.
        found: String,
        /// The target the caller asked for.
        expected: String,
    },
    /// The file passed the checksum but its content is inconsistent (a writer bug or a crafted file).
    #[error("{}: corrupt artifact: {detail}", path.display())]
    Corrupt {
        /// The artifact's path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The graph, weights or metadata given to [`write_artifact`] cannot be stored as given.
    #[error("{}: cannot write artifact: {detail}", path.display())]
    Invalid {
        /// The destination path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl ArtifactError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ArtifactError::Io { path, .. }
            | ArtifactError::NotAnArtifact { path }
            | ArtifactError::Version { path, .. }
            | ArtifactError::Checksum { path, .. }
            | ArtifactError::Target { path, .. }
            | ArtifactError::Corrupt { path, .. }
            | ArtifactError::Invalid { path, .. } => path,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|x| x / ALIGN * ALIGN)
}

/// Bytes a blob of `count` elements of `dtype` takes.
fn blob_bytes(dtype: DType, count: u64) -> Option<u64> {
    match dtype {
        DType::I4 => Some(count.div_ceil(2)),
        other => count.checked_mul(other.size_bytes() as u64),
    }
}

fn encode_header(header: &ArtifactHeader) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(header, bincode::config::legacy()).map_err(|e| format!("header does not encode: {e}"))
}

/// Whether two f32 are the same value (bitwise, or both NaN).
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Checks that `values` can be stored exactly in `decl.dtype`.
fn check_values(decl: &WeightDecl, values: &[f32]) -> Result<(), String> {
    let bad = |i: usize, v: f32, why: &str| Err(format!("weight `{}` ({}{:?}): value {v} at index {i} {why}", decl.name, decl.dtype, decl.shape));
    let integers = |lo: f64, hi: f64| -> Result<(), String> {
        for (i, &v) in values.iter().enumerate() {
            let x = f64::from(v);
            if !v.is_finite() || v.fract() != 0.0 || x < lo || x > hi {
                return bad(i, v, &format!("is not an integer in [{lo}, {hi}]"));
            }
        }
        Ok(())
    };
    match decl.dtype {
        DType::F32 => Ok(()),
        DType::F16 => {
            for (i, &v) in values.iter().enumerate() {
                if !same_f32(f16::from_f32(v).to_f32(), v) {
                    return bad(i, v, "is not exactly representable in f16 (declare the weight f32, or round it first)");
                }
            }
            Ok(())
        }
        DType::BF16 => {
            for (i, &v) in values.iter().enumerate() {
                if !same_f32(bf16::from_f32(v).to_f32(), v) {
                    return bad(i, v, "is not exactly representable in bf16 (declare the weight f32, or round it first)");
                }
            }
            Ok(())
        }
        DType::I8 => integers(-128.0, 127.0),
        DType::I4 => integers(-8.0, 7.0),
        DType::I32 => integers(f64::from(i32::MIN), f64::from(i32::MAX)),
        // 2^63 - 1 is not an f32; the largest f32 below 2^63 is 2^63 - 2^39.
        DType::I64 => integers(-9_223_372_036_854_775_808.0, 9_223_371_487_098_961_920.0),
    }
}

/// Encodes checked values into `out` (cleared first).
fn encode_blob(dtype: DType, values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        DType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => values.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        DType::BF16 => values.iter().for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        DType::I8 => values.iter().for_each(|v| out.push(*v as i8 as u8)),
        DType::I4 => {
            for pair in values.chunks(2) {
                let lo = (pair[0] as i8 as u8) & 0x0f;
                let hi = pair.get(1).map_or(0, |v| (*v as i8 as u8) & 0x0f);
                out.push(lo | (hi << 4));
            }
        }
        DType::I32 => values.iter().for_each(|v| out.extend_from_slice(&(*v as i32).to_le_bytes())),
        DType::I64 => values.iter().for_each(|v| out.extend_from_slice(&(*v as i64).to_le_bytes())),
    }
}

/// Decodes a blob whose length has been checked against `count`: integer weights (i8, i4) stay
/// integers, one byte each; the rest become f32.
fn decode_blob(dtype: DType, blob: &[u8], count: usize, shape: Vec<usize>) -> Result<WeightData, String> {
    let data = match dtype {
        DType::F32 => WeightData::new(shape, blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        DType::F16 => WeightData::new(shape, blob.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        DType::BF16 => WeightData::new(shape, blob.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        DType::I32 => WeightData::new(shape, blob.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect()),
        DType::I64 => WeightData::new(shape, blob.chunks_exact(8).map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32).collect()),
        DType::I8 => WeightData::integers(shape, blob.iter().map(|b| *b as i8).collect()),
        DType::I4 => {
            if count % 2 == 1 && blob.last().is_some_and(|b| b >> 4 != 0) {
                return Err("the unused high nibble of an odd-length i4 blob is not zero".into());
            }
            let ints = (0..count)
                .map(|i| {
                    let b = blob[i / 2];
                    let nibble = if i % 2 == 0 { b << 4 } else { b & 0xf0 };
                    (nibble as i8) >> 4
                })
                .collect();
            WeightData::integers(shape, ints)
        }
    };
    if data.count() != count {
        return Err(format!("decoded {} values, expected {count}", data.count()));
    }
    Ok(data)
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// A writer that tracks its position and the CRC-32 of everything written through it.
struct CrcWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    pos: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> CrcWriter<W> {
    /// Writes zeros up to file offset `to` (less than [`ALIGN`] bytes away).
    fn pad_to(&mut self, to: u64) -> io::Result<()> {
        const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];
        let gap = to.checked_sub(self.pos).filter(|g| *g < ALIGN).ok_or_else(|| io::Error::other("internal layout error"))?;
        self.write_all(&ZEROS[..gap as usize])
    }
}

/// Removes the temporary file on drop unless the rename happened.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Distinguishes temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Fills in the blob offsets: returns the encoded header and the end of the blob data. With the
/// fixed-width integer encoding the header's length does not depend on the offsets, so this
/// settles on the second round; the loop only guards that assumption.
fn lay_out(header: &mut ArtifactHeader) -> Result<(Vec<u8>, u64), String> {
    for _ in 0..4 {
        let encoded = encode_header(header)?;
        if encoded.len() > MAX_HEADER_BYTES {
            return Err(format!("the header is {} bytes, the format allows at most {MAX_HEADER_BYTES}", encoded.len()));
        }
        let overflow = || "the artifact would exceed 2^64 bytes".to_string();
        let mut at = align_up((PREFIX_BYTES + encoded.len()) as u64).ok_or_else(overflow)?;
        let mut changed = false;
        for blob in &mut header.weights {
            at = align_up(at).ok_or_else(overflow)?;
            changed |= blob.offset != at;
            blob.offset = at;
            at = at.checked_add(blob.bytes).ok_or_else(overflow)?;
        }
        if !changed {
            return Ok((encoded, at));
        }
    }
    Err("internal error: the header layout does not settle".into())
}

/// Writes `graph` and `weights` as an artifact at `path`, atomically: the data goes to a
/// temporary file `.{name}.tmp-{pid}-{n}` in the same directory, which is fsynced and then renamed
/// over `path`. On any error the temporary file is removed and an existing file at `path` is left
/// untouched. Returns the number of bytes written.
///
/// The inputs are validated first ([`ArtifactError::Invalid`]): the weights must match the
/// graph's declarations, and every value must be exactly representable in its declared dtype
/// (integers in range for i8 / i4 / i32 / i64; f16 / bf16 values must have been widened from
/// that dtype — a pass that changes such a weight must retype it f32 or round it).
pub fn write_artifact(path: &Path, meta: &ArtifactMeta, graph: &Graph, weights: &Weights) -> Result<u64, ArtifactError> {
    let invalid = |detail: String| ArtifactError::Invalid { path: path.to_path_buf(), detail };
    let io_err = |what: String| move |source: io::Error| ArtifactError::Io { path: path.to_path_buf(), what, source };

    let file_name = path.file_name().ok_or_else(|| invalid("the destination has no file name".into()))?;
    if meta.target.is_empty() {
        return Err(invalid("the target is empty".into()));
    }
    weights.check_against(graph).map_err(|e| invalid(e.to_string()))?;
    let decls = graph.weights();
    let data: Vec<&WeightData> = (0..decls.len()).map(|i| weights.get(WeightId::new(i))).collect();
    for (decl, d) in decls.iter().zip(&data) {
        check_values(decl, &d.floats()).map_err(invalid)?;
    }
    let graph_text = graph.to_string();
    match ir::parse(&graph_text) {
        Ok(back) if back.to_string() == graph_text => {}
        Ok(_) => return Err(invalid("the graph's text form does not round-trip".into())),
        Err(e) => return Err(invalid(format!("the graph's text form does not parse back: {e}"))),
    }

    let mut header = ArtifactHeader {
        format_version: FORMAT_VERSION,
        compiler_version: meta.compiler_version.clone(),
        target: meta.target.clone(),
        family: graph.family.name().to_string(),
        model_config_json: meta.model_config_json.clone(),
        kernel_plan: meta.kernel_plan.clone(),
        graph_text,
        weights: decls
            .iter()
            .map(|d| {
                let count = d.shape.iter().try_fold(1u64, |a, &n| a.checked_mul(n as u64));
                let bytes = count.and_then(|c| blob_bytes(d.dtype, c)).ok_or_else(|| invalid(format!("weight `{}` is too large", d.name)))?;
                Ok(BlobInfo { name: d.name.clone(), dtype: d.dtype.name().to_string(), shape: d.shape.iter().map(|&n| n as u64).collect(), offset: 0, bytes })
            })
            .collect::<Result<_, ArtifactError>>()?,
    };
    let (header_bytes, data_end) = lay_out(&mut header).map_err(invalid)?;

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".{}.tmp-{}-{}", file_name.to_string_lossy(), std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err(format!("creating the temporary file {}", tmp.display())))?;
    let mut guard = TempGuard { path: tmp.clone(), armed: true };

    let writing = format!("writing {}", tmp.display());
    let mut w = CrcWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: crc32fast::Hasher::new(), pos: 0 };
    let result: io::Result<()> = (|| {
        w.write_all(&MAGIC)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes())?;
        w.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        w.write_all(&header_bytes)?;
        let mut buf = Vec::new();
        for (info, d) in header.weights.iter().zip(&data) {
            w.pad_to(info.offset)?;
            encode_blob(DType::from_name(&info.dtype).expect("written from a DType"), &d.floats(), &mut buf);
            debug_assert_eq!(buf.len() as u64, info.bytes);
            w.write_all(&buf)?;
        }
        if header.weights.is_empty() {
            w.pad_to(data_end)?;
        }
        if w.pos != data_end {
            return Err(io::Error::other("internal layout error"));
        }
        Ok(())
    })();
    result.map_err(io_err(writing.clone()))?;
    let crc = w.hasher.finalize();
    let mut out = w.inner;
    out.write_all(&crc.to_le_bytes()).map_err(io_err(writing.clone()))?;
    let file = out.into_inner().map_err(|e| io_err(writing.clone())(e.into_error()))?;
    file.sync_all().map_err(io_err(format!("syncing {}", tmp.display())))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(format!("renaming {} over it", tmp.display())))?;
    guard.armed = false;
    sync_dir(dir);
    Ok(data_end + CHECKSUM_BYTES as u64)
}

/// Makes the rename durable (best effort: not every platform can sync a directory).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads and fully checks the artifact at `path`: magic, format version, checksum, header, the
/// target (when `expected_target` is given), the graph text, and every blob's dtype, shape and
/// bounds; then widens the weights to f32.
///
/// The whole file is read into memory. (The blobs are aligned so that a later version can
/// memory-map the file instead.)
pub fn read_artifact(path: &Path, expected_target: Option<&str>) -> Result<Artifact, ArtifactError> {
    let bytes = read_file(path)?;
    read_artifact_bytes(&bytes, path, expected_target)
}

/// Reads only the header of the artifact at `path` (for `quambac inspect`), after the same
/// magic, version, checksum and header checks as [`read_artifact`].
pub fn read_header(path: &Path) -> Result<ArtifactHeader, ArtifactError> {
    let bytes = read_file(path)?;
    Ok(parse_prefix_and_header(&bytes, path)?.0)
}

fn read_file(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    fs::read(path).map_err(|source| ArtifactError::Io { path: path.to_path_buf(), what: "reading".into(), source })
}

/// [`read_artifact`] on bytes already in memory; `path` only names the source in errors.
pub fn read_artifact_bytes(bytes: &[u8], path: &Path, expected_target: Option<&str>) -> Result<Artifact, ArtifactError> {
    let corrupt = |detail: String| ArtifactError::Corrupt { path: path.to_path_buf(), detail };
    let (header, data_start) = parse_prefix_and_header(bytes, path)?;
    if let Some(expected) = expected_target {
        if header.target != expected {
            return Err(ArtifactError::Target { path: path.to_path_buf(), found: header.target.clone(), expected: expected.to_string() });
        }
    }
    let graph = ir::parse(&header.graph_text).map_err(|e| corrupt(format!("the graph text does not parse: {e}")))?;
    if graph.family.name() != header.family {
        return Err(corrupt(format!("the header says family `{}`, the graph is {}", header.family, graph.family.name())));
    }
    let decls = graph.weights();
    if decls.len() != header.weights.len() {
        return Err(corrupt(format!("the graph declares {} weights, the header lists {} blobs", decls.len(), header.weights.len())));
    }
    let payload_end = (bytes.len() - CHECKSUM_BYTES) as u64;
    let mut prev_end = data_start;
    let mut weights = Weights::new();
    for (i, (decl, info)) in decls.iter().zip(&header.weights).enumerate() {
        let blob_err = |what: String| corrupt(format!("blob {i} (`{}`): {what}", info.name));
        if info.name != decl.name {
            return Err(blob_err(format!("the graph declares weight @{i} as `{}`", decl.name)));
        }
        if DType::from_name(&info.dtype) != Some(decl.dtype) {
            return Err(blob_err(format!("dtype `{}`, the graph declares {}", info.dtype, decl.dtype)));
        }
        if info.shape.len() != decl.shape.len() || info.shape.iter().zip(&decl.shape).any(|(a, b)| u64::try_from(*b).ok() != Some(*a)) {
            return Err(blob_err(format!("shape {:?}, the graph declares {:?}", info.shape, decl.shape)));
        }
        let count = decl.shape.iter().try_fold(1u64, |a, &n| a.checked_mul(u64::try_from(n).ok()?));
        let expected = count.and_then(|c| blob_bytes(decl.dtype, c)).ok_or_else(|| blob_err(format!("shape {:?} is too large", decl.shape)))?;
        if info.bytes != expected {
            return Err(blob_err(format!("{} bytes, {}{:?} needs {expected}", info.bytes, decl.dtype, decl.shape)));
        }
        if info.offset % ALIGN != 0 {
            return Err(blob_err(format!("offset {} is not a multiple of {ALIGN}", info.offset)));
        }
        if info.offset < prev_end {
            return Err(blob_err(format!("offset {} overlaps the header or the previous blob (which end at {prev_end})", info.offset)));
        }
        let end = info.offset.checked_add(info.bytes).filter(|e| *e <= payload_end).ok_or_else(|| {
            blob_err(format!("{} bytes at offset {} run past the end of the data ({payload_end})", info.bytes, info.offset))
        })?;
        if info.offset - prev_end >= ALIGN {
            return Err(blob_err(format!("offset {} leaves a gap after the previous data, which ends at {prev_end}", info.offset)));
        }
        // Both fit in usize: they are at most payload_end, a slice length.
        let blob = &bytes[info.offset as usize..end as usize];
        let count = usize::try_from(count.unwrap_or(0)).map_err(|_| blob_err("too many elements".into()))?;
        weights.push(decode_blob(decl.dtype, blob, count, decl.shape.clone()).map_err(blob_err)?);
        prev_end = end;
    }
    if prev_end != payload_end {
        return Err(corrupt(format!("{} bytes between the last blob and the checksum belong to nothing", payload_end.saturating_sub(prev_end))));
    }
    Ok(Artifact { header, graph, weights })
}

/// Checks magic, version, checksum and decodes the header; returns it and the data start `D`.
fn parse_prefix_and_header(bytes: &[u8], path: &Path) -> Result<(ArtifactHeader, u64), ArtifactError> {
    let corrupt = |detail: String| ArtifactError::Corrupt { path: path.to_path_buf(), detail };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(ArtifactError::NotAnArtifact { path: path.to_path_buf() });
    }
    if bytes.len() < 12 {
        return Err(corrupt(format!("truncated: {} bytes, too short for the format version", bytes.len())));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(ArtifactError::Version { path: path.to_path_buf(), found: version });
    }
    if bytes.len() < PREFIX_BYTES + CHECKSUM_BYTES {
        return Err(corrupt(format!("truncated: {} bytes, shorter than the smallest artifact", bytes.len())));
    }
    let payload_end = bytes.len() - CHECKSUM_BYTES;
    let tail = &bytes[payload_end..];
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32fast::hash(&bytes[..payload_end]);
    if stored != computed {
        return Err(ArtifactError::Checksum { path: path.to_path_buf(), stored, computed });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let header_len = u64::from_le_bytes(len);
    let header_end = usize::try_from(header_len)
        .ok()
        .filter(|h| *h <= MAX_HEADER_BYTES)
        .and_then(|h| PREFIX_BYTES.checked_add(h))
        .filter(|e| *e <= payload_end)
        .ok_or_else(|| corrupt(format!("header length {header_len} does not fit the file ({} bytes)", bytes.len())))?;
    let config = bincode::config::legacy().with_limit::<MAX_HEADER_BYTES>();
    let (header, used): (ArtifactHeader, usize) =
        bincode::serde::decode_from_slice(&bytes[PREFIX_BYTES..header_end], config).map_err(|e| corrupt(format!("the header does not decode: {e}")))?;
    if used != header_end - PREFIX_BYTES {
        return Err(corrupt(format!("the header is {used} bytes, the prefix says {header_len}")));
    }
    if header.format_version != version {
        return Err(corrupt(format!("the header says format version {}, the prefix {version}", header.format_version)));
    }
    let data_start = align_up(header_end as u64).filter(|d| *d <= payload_end as u64).ok_or_else(|| corrupt("truncated after the header".into()))?;
    Ok((header, data_start))
}

// ---------------------------------------------------------------------------------------------
// Describing
// ---------------------------------------------------------------------------------------------

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.2} {}", UNITS[unit])
}

/// The file size an artifact with this header has (the header determines the layout).
pub fn file_size(header: &ArtifactHeader) -> u64 {
    let data_end = match header.weights.last() {
        Some(last) => last.offset.saturating_add(last.bytes),
        None => {
            let header_len = encode_header(header).map_or(0, |h| h.len() as u64);
            align_up(PREFIX_BYTES as u64 + header_len).unwrap_or(u64::MAX)
        }
    };
    data_end.saturating_add(CHECKSUM_BYTES as u64)
}

/// A human-readable summary of an artifact, for `quambac inspect model.qmb`.
pub fn describe(header: &ArtifactHeader) -> String {
    use std::fmt::Write as _;
    // Per dtype: (weights, elements, bytes), in DType::ALL order, then unknown names.
    let mut rows: Vec<(String, u64, u64, u64)> = Vec::new();
    for b in &header.weights {
        let elements = b.shape.iter().fold(1u64, |a, &n| a.saturating_mul(n));
        match rows.iter_mut().find(|r| r.0 == b.dtype) {
            Some(r) => {
                r.1 += 1;
                r.2 = r.2.saturating_add(elements);
                r.3 = r.3.saturating_add(b.bytes);
            }
            None => rows.push((b.dtype.clone(), 1, elements, b.bytes)),
        }
    }
    let rank = |name: &str| DType::ALL.iter().position(|d| d.name() == name).unwrap_or(DType::ALL.len());
    rows.sort_by_key(|r| rank(&r.0));
    let blob_total: u64 = header.weights.iter().fold(0u64, |a, b| a.saturating_add(b.bytes));
    let size = file_size(header);

    let mut s = String::new();
    let _ = writeln!(s, "target          {}", header.target);
    let _ = writeln!(s, "family          {}", header.family);
    let _ = writeln!(s, "format version  {}", header.format_version);
    let _ = writeln!(s, "compiler        quambac {}", header.compiler_version);
    let _ = writeln!(s, "file size       {} ({size} bytes)", human_bytes(size));
    let _ = writeln!(s, "weights         {} ({} of blobs)", header.weights.len(), human_bytes(blob_total));
    for (dtype, n, elements, bytes) in &rows {
        let _ = writeln!(s, "  {dtype:<6} {n:>5} weights  {elements:>14} elements  {:>12}", human_bytes(*bytes));
    }
    let _ = writeln!(s, "kernel plan     {} kernels", header.kernel_plan.len());
    let _ = writeln!(s, "graph           {} lines of IR", header.graph_text.lines().count());
    let _ = writeln!(s, "model config    {} bytes of JSON", header.model_config_json.len());
    s
}
