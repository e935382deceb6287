//! CRC-32 (IEEE 802.3, reflected polynomial `0xEDB88320`, initial value and
//! final XOR `0xFFFFFFFF`): the checksum of zlib, PNG and `crc32fast`.
//!
//! The 256-entry table is built by a `const fn` at compile time, so it lives
//! in flash and checking a model costs no RAM.

/// Reflected IEEE polynomial.
const POLY: u32 = 0xEDB8_8320;

/// Byte-at-a-time lookup table, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 of `bytes`.
///
/// # Examples
///
/// ```
/// // The standard check value.
/// assert_eq!(lenet_core::quant::crc32(b"123456789"), 0xCBF4_3926);
/// ```
pub const fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0, bytes)
}

/// The CRC-32 of `a` followed by `bytes`, given `crc = crc32(a)`: a
/// checksum computed piece by piece, for data that is never in memory at
/// once.
///
/// # Examples
///
/// ```
/// use lenet_core::quant::{crc32, crc32_update};
/// assert_eq!(crc32_update(crc32(b"1234"), b"56789"), crc32(b"123456789"));
/// ```
pub const fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut crc = !crc;
    let mut i = 0;
    while i < bytes.len() {
        crc = TABLE[((crc ^ bytes[i] as u32) & 0xFF) as usize] ^ (crc >> 8);
        i += 1;
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time definition, independent of the table.
    fn bitwise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (POLY & mask);
            }
        }
        !crc
    }

    #[test]
    fn check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        let data: [u8; 1000] = core::array::from_fn(|i| (i * 31 + 7) as u8);
        assert_eq!(crc32(&data), bitwise(&data));
    }
}
