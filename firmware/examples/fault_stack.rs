//! Recurses without end: the stack runs out, and the program must end with
//! status 4 and a message saying so (tests/firmware_faults.rs), not hang.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use lenet_firmware as _;

/// Uses 1 KiB of stack per level and cannot be turned into a loop.
#[inline(never)]
#[allow(unconditional_recursion)]
fn deep(n: u32) -> u32 {
    let mut buf = [0u8; 1024];
    buf[(n % 1024) as usize] = n as u8;
    core::hint::black_box(&mut buf);
    deep(n + 1).wrapping_add(u32::from(buf[(n * 7 % 1024) as usize]))
}

#[entry]
fn main() -> ! {
    let r = deep(core::hint::black_box(0));
    core::hint::black_box(r);
    lenet_firmware::exit_success()
}
