//! Panics: the program must end with status 101 and a message naming the
//! place (tests/firmware_faults.rs).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use lenet_firmware as _;

#[entry]
fn main() -> ! {
    let n = core::hint::black_box(3usize);
    let table = [1u8; 2];
    // An index out of bounds, as a bug would make.
    let _ = core::hint::black_box(table[n]);
    panic!("unreachable")
}
