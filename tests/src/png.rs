//! The size of a PNG image, read from its header, so tests can check the images the
//! emulator draws (GetMetricWidgetImage) without a PNG decoder.

/// The eight bytes every PNG file starts with.
const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// `(width, height)` in pixels from the IHDR chunk, which the PNG specification requires
/// to come first; an error says what is wrong with the bytes.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), String> {
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE {
        return Err(format!(
            "not a PNG: it does not start with the PNG signature ({} bytes, first ones {:?})",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        ));
    }
    // Signature, then the IHDR chunk: length (4 bytes), type (4), width (4), height (4).
    if &bytes[12..16] != b"IHDR" {
        return Err("not a PNG: its first chunk is not IHDR".to_owned());
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Ok((word(16), word(20)))
}

#[cfg(test)]
mod tests {
    use super::dimensions;

    #[test]
    fn reads_the_ihdr_size_and_refuses_other_bytes() {
        let mut header = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        header.extend_from_slice(&600u32.to_be_bytes());
        header.extend_from_slice(&300u32.to_be_bytes());
        assert_eq!(dimensions(&header), Ok((600, 300)));
        assert!(dimensions(b"GIF89a............................").is_err());
    }
}
