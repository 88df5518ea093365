//! What an uploaded file is, judged by its bytes only (never its name or declared type):
//! JPEG, PNG, HEIC or PDF, complete (not truncated), with image dimensions within bounds.

use std::io::{Read, Seek, SeekFrom};

/// A recognised document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jpeg,
    Png,
    Heic,
    Pdf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Heic => "image/heic",
            Format::Pdf => "application/pdf",
        }
    }

    pub fn parse(content_type: &str) -> Option<Format> {
        [Format::Jpeg, Format::Png, Format::Heic, Format::Pdf].into_iter().find(|f| f.content_type() == content_type)
    }
}

/// The bounds a file is checked against (`[documents]`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub min_side_px: u32,
    pub max_side_px: u32,
}

/// What was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recognised {
    pub format: Format,
    /// Pixels (none for a PDF).
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Why a file was refused; the message says what is wrong (the caller names the part).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("is empty (0 bytes)")]
    Empty,
    #[error("is not a JPEG, PNG, HEIC or PDF file (formats are recognised by their content, not by file name or Content-Type)")]
    UnknownFormat,
    #[error("is a truncated or malformed {0}: {1}")]
    Malformed(&'static str, &'static str),
    #[error("is {width}×{height} pixels; each side must be {min} to {max} pixels")]
    Dimensions { width: u32, height: u32, min: u32, max: u32 },
}

/// The format whose signature `head` (the file's first bytes) starts with.
pub fn sniff(head: &[u8]) -> Option<Format> {
    const HEIF_BRANDS: &[&[u8]] = &[b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"];
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if head.len() >= 12 && &head[4..8] == b"ftyp" && HEIF_BRANDS.contains(&&head[8..12]) {
        Some(Format::Heic)
    } else if head.starts_with(b"%PDF-") {
        Some(Format::Pdf)
    } else {
        None
    }
}

/// Checks a whole file (seekable: only its header, its end and, for HEIC, its box headers are
/// read, so a large file costs a few reads).
pub fn check<R: Read + Seek>(file: &mut R, len: u64, bounds: Bounds) -> Result<Recognised, ContentError> {
    if len == 0 {
        return Err(ContentError::Empty);
    }
    let mut head = [0u8; 16];
    let n = read_at(file, 0, &mut head).map_err(|_| ContentError::UnknownFormat)?;
    let format = sniff(&head[..n]).ok_or(ContentError::UnknownFormat)?;
    let mut tail = vec![0u8; len.min(1024) as usize];
    read_at(file, len - tail.len() as u64, &mut tail).map_err(|_| ContentError::Malformed("file", "unreadable"))?;
    match format {
        Format::Jpeg => {
            // Ends with the end-of-image marker (padding zeros after it are tolerated).
            let end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end < 2 || tail[end - 2..end] != [0xFF, 0xD9] {
                return Err(ContentError::Malformed("JPEG", "it does not end with the end-of-image marker"));
            }
        }
        Format::Png => {
            if !tail.ends_with(b"\0\0\0\0IEND\xaeB`\x82") {
                return Err(ContentError::Malformed("PNG", "it does not end with the IEND chunk"));
            }
        }
        Format::Heic => heif_boxes_cover(file, len)?,
        Format::Pdf => {
            if !tail.windows(5).any(|w| w == b"%%EOF") {
                return Err(ContentError::Malformed("PDF", "no %%EOF marker at its end"));
            }
            return Ok(Recognised { format, width: None, height: None });
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(|_| ContentError::Malformed("file", "unreadable"))?;
    let size = imagesize::reader_size(std::io::BufReader::new(&mut *file))
        .map_err(|_| ContentError::Malformed(name(format), "its dimensions cannot be read"))?;
    let (w, h) = (size.width as u32, size.height as u32);
    let ok = |v: u32| (bounds.min_side_px..=bounds.max_side_px).contains(&v);
    if !ok(w) || !ok(h) {
        return Err(ContentError::Dimensions { width: w, height: h, min: bounds.min_side_px, max: bounds.max_side_px });
    }
    Ok(Recognised { format, width: Some(w), height: Some(h) })
}

fn name(f: Format) -> &'static str {
    match f {
        Format::Jpeg => "JPEG",
        Format::Png => "PNG",
        Format::Heic => "HEIC",
        Format::Pdf => "PDF",
    }
}

fn read_at<R: Read + Seek>(file: &mut R, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(at))?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// HEIC (ISO BMFF): the top-level boxes' sizes must add up to exactly the file's length.
fn heif_boxes_cover<R: Read + Seek>(file: &mut R, len: u64) -> Result<(), ContentError> {
    let bad = || ContentError::Malformed("HEIC", "its boxes do not add up to the file's length");
    let mut at = 0u64;
    let mut boxes = 0;
    while at < len {
        let mut h = [0u8; 16];
        if read_at(file, at, &mut h).map_err(|_| bad())? < 8 {
            return Err(bad());
        }
        let size = match u32::from_be_bytes(h[0..4].try_into().expect("4 bytes")) as u64 {
            0 => len - at,
            1 => u64::from_be_bytes(h[8..16].try_into().expect("8 bytes")),
            s => s,
        };
        if size < 8 {
            return Err(bad());
        }
        at = at.checked_add(size).ok_or_else(bad)?;
        boxes += 1;
        if boxes > 10_000 {
            return Err(bad());
        }
    }
    if at != len {
        return Err(bad());
    }
    Ok(())
}

/// Test and benchmark images: minimal well-formed files of each format, `pad` bytes longer.
pub mod samples {
    /// A baseline JPEG header (SOI, SOF0 with the dimensions), `pad` bytes of comment segments,
    /// then EOI. Decoders find no scan data, but every structural check passes.
    pub fn jpeg(width: u16, height: u16, pad: usize) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
        let mut left = pad;
        while left > 0 {
            let n = left.min(65_000);
            v.extend_from_slice(&[0xFF, 0xFE]);
            v.extend_from_slice(&((n + 2) as u16).to_be_bytes());
            v.extend((0..n).map(|i| b'a' + (i % 26) as u8));
            left -= n;
        }
        v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    /// A PNG signature, IHDR with the dimensions, `pad` bytes of a private chunk, IEND. CRCs
    /// are not checked by idstream and are written as zeros except IEND's.
    pub fn png(width: u32, height: u32, pad: usize) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0]);
        v.extend_from_slice(&[0; 4]);
        if pad > 0 {
            v.extend_from_slice(&(pad as u32).to_be_bytes());
            v.extend_from_slice(b"prVt");
            v.extend((0..pad).map(|i| (i % 251) as u8));
            v.extend_from_slice(&[0; 4]);
        }
        v.extend_from_slice(b"\0\0\0\0IEND\xaeB`\x82");
        v
    }

    /// A PDF with one empty page.
    pub fn pdf() -> Vec<u8> {
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n".to_vec()
    }

    /// An HEIC file: `ftyp` (brand heic), a `meta` box with `ispe` (the dimensions) and an
    /// `mdat` box of `pad` bytes.
    pub fn heic(width: u32, height: u32, pad: usize) -> Vec<u8> {
        fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.extend_from_slice(body);
            v
        }
        fn full(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut b = vec![0, 0, 0, 0];
            b.extend_from_slice(body);
            bx(kind, &b)
        }
        let ftyp = bx(b"ftyp", b"heic\0\0\0\0mif1heic");
        let hdlr = full(b"hdlr", b"\0\0\0\0pict\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let pitm = full(b"pitm", &[0, 1]);
        let mut ispe_body = width.to_be_bytes().to_vec();
        ispe_body.extend_from_slice(&height.to_be_bytes());
        let ispe = full(b"ispe", &ispe_body);
        let ipco = bx(b"ipco", &ispe);
        let ipma = full(b"ipma", &[0, 0, 0, 1, 0, 1, 1, 0x81]);
        let iprp = bx(b"iprp", &[ipco, ipma].concat());
        let meta = full(b"meta", &[hdlr, pitm, iprp].concat());
        let mdat = bx(b"mdat", &vec![0u8; pad]);
        [ftyp, meta, mdat].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;
    use std::io::Cursor;

    const B: Bounds = Bounds { min_side_px: 100, max_side_px: 10_000 };

    fn check_bytes(b: &[u8]) -> Result<Recognised, ContentError> {
        check(&mut Cursor::new(b), b.len() as u64, B)
    }

    #[test]
    fn each_format_is_recognised_by_its_bytes_with_its_dimensions() {
        let r = check_bytes(&jpeg(1200, 800, 5000)).unwrap();
        assert_eq!((r.format, r.width, r.height), (Format::Jpeg, Some(1200), Some(800)));
        let r = check_bytes(&png(640, 480, 100)).unwrap();
        assert_eq!((r.format, r.width, r.height), (Format::Png, Some(640), Some(480)));
        let r = check_bytes(&heic(4032, 3024, 1000)).unwrap();
        assert_eq!((r.format, r.width, r.height), (Format::Heic, Some(4032), Some(3024)));
        let r = check_bytes(&pdf()).unwrap();
        assert_eq!((r.format, r.width), (Format::Pdf, None));
    }

    #[test]
    fn empty_unknown_truncated_and_out_of_bounds_files_are_refused() {
        assert_eq!(check_bytes(b""), Err(ContentError::Empty));
        assert_eq!(check_bytes(b"GIF89a......"), Err(ContentError::UnknownFormat));
        assert_eq!(check_bytes(b"<html>not an image</html>"), Err(ContentError::UnknownFormat));
        for (good, what) in [
            (jpeg(1200, 800, 5000), "JPEG"),
            (png(640, 480, 100), "PNG"),
            (heic(500, 500, 100), "HEIC"),
            (pdf(), "PDF"),
        ] {
            let cut = &good[..good.len() - 7];
            match check_bytes(cut) {
                Err(ContentError::Malformed(f, _)) => assert_eq!(f, what),
                other => panic!("{what} cut short: {other:?}"),
            }
        }
        assert_eq!(
            check_bytes(&jpeg(50, 800, 10)),
            Err(ContentError::Dimensions { width: 50, height: 800, min: 100, max: 10_000 })
        );
        assert!(matches!(check_bytes(&png(20_000, 480, 0)), Err(ContentError::Dimensions { .. })));
        // A JPEG whose header is cut before its dimensions.
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        j.extend_from_slice(&[0; 14]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        assert!(matches!(check_bytes(&j), Err(ContentError::Malformed("JPEG", _))), "{:?}", check_bytes(&j));
    }
}
