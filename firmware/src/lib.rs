//! `lenet-firmware`: LeNet-5 int8 inference on a Cortex-M4F.
//!
//! The shared pieces of the programs in `src/bin/`: the defmt logger
//! (semihosting), the panic and HardFault handlers (both end the program with
//! a message and a failure status through semihosting, so QEMU exits
//! non-zero: 101 for a panic, 3 for a fault, 4 for a stack overflow), the
//! exit helpers, the instruction/cycle meter, the stack high-water mark, and the
//! model embedded in flash by `build.rs`.
//!
//! Two memory maps, chosen by cargo feature (see `build.rs`):
//! - default: QEMU `-machine mps2-an386` (4 MiB flash at 0, 4 MiB RAM at
//!   0x2000_0000); the meter counts instructions with the CMSDK APB timer 0
//!   under `-icount shift=6`;
//! - `nucleo-f411re`: the ST Nucleo-F411RE board; the meter counts cycles
//!   with the DWT.
//!
//! Output channels: defmt log frames go to semihosting stdout (decode them
//! with `defmt-print`); the human-readable report lines go to semihosting
//! stderr as plain text, so a test can read them without a defmt decoder.
#![no_std]
#![deny(missing_docs)]

use core::panic::PanicInfo;

use cortex_m as _; // critical-section implementation (single core)
use cortex_m_rt::ExceptionFrame;
use defmt_semihosting as _; // global logger
use report::Hex;

#[cfg(lenet_fast)]
pub mod fast;
pub mod kernel;
pub mod meter;
pub mod report;

/// Ends the program with success: QEMU (or `probe-rs run`) exits with 0.
pub fn exit_success() -> ! {
    semihosting::process::exit(0)
}

/// Ends the program with a failure status: QEMU exits with `code` (not 0).
pub fn exit_failure(code: i32) -> ! {
    semihosting::process::exit(code)
}

/// Fills `buf` from the host file `file`, or reports `short` (the line
/// that names the file) and ends the program with status 2.
pub fn read_exact(file: &mut semihosting::fs::File, buf: &mut [u8], short: &str) {
    use semihosting::io::Read;
    if file.read_exact(buf).is_err() {
        report!(short);
        exit_failure(2);
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    // Only the location: formatting the message would link core::fmt.
    match info.location() {
        Some(l) => report!("panic at ", l.file(), ":", l.line()),
        None => report!("panic"),
    }
    defmt::error!("panic");
    exit_failure(101)
}

#[defmt::panic_handler]
fn defmt_panic() -> ! {
    exit_failure(101)
}

// The HardFault vector, in assembly because the fault may be a stack
// overflow: the stack pointer then points below the stack, and the first
// push of a Rust handler would fault again (a lockup, which QEMU does not
// end). So: pass the stack pointer at the fault in r0, move MSP back to the
// top of the stack region (the program is ending; nothing there is needed
// any more), and only then enter Rust. The programs run on MSP only.
core::arch::global_asm!(
    ".section .HardFault.user, \"ax\"",
    ".global HardFault",
    ".type HardFault,%function",
    ".thumb_func",
    "HardFault:",
    "mrs r0, MSP",
    "ldr r1, =_stack_start",
    "msr MSP, r1",
    "b {report}",
    ".ltorg",
    report = sym hard_fault,
);

/// cortex-m-rt's link.x refers to `_HardFault` (its trampoline's target);
/// the vector above does not use it.
#[unsafe(export_name = "_HardFault")]
extern "C" fn unused_hard_fault_trampoline_target() {}

/// Configurable Fault Status Register.
const CFSR: *const u32 = 0xE000_ED28 as *const u32;
/// CFSR bits of a fault while stacking on exception entry (MemManage,
/// BusFault).
const CFSR_STACKING: u32 = (1 << 4) | (1 << 12);

/// Reports a fault and ends the program: a stack overflow (the stack
/// pointer at the fault is below the stack region, or exception entry could
/// not push its frame) with status 4, any other fault with its PC and
/// status 3.
extern "C" fn hard_fault(sp: u32) -> ! {
    let end = &raw const _stack_end as u32;
    let top = &raw const _stack_start as u32;
    // SAFETY: CFSR is a readable System Control Block register.
    let cfsr = unsafe { core::ptr::read_volatile(CFSR) };
    if sp < end || sp > top || cfsr & CFSR_STACKING != 0 {
        report!(
            "stack overflow: sp=",
            Hex(sp),
            " is below the stack (",
            Hex(end),
            "..",
            Hex(top),
            "), cfsr=",
            Hex(cfsr)
        );
        exit_failure(4)
    }
    // SAFETY: sp is inside the stack region and exception entry pushed a
    // complete frame there (no stacking error).
    let frame = unsafe { &*(sp as *const ExceptionFrame) };
    report!(
        "HardFault: pc=",
        Hex(frame.pc()),
        " lr=",
        Hex(frame.lr()),
        " cfsr=",
        Hex(cfsr)
    );
    exit_failure(3)
}

/// Device interrupts of the chip: 32 on QEMU's mps2-an386, 86 on the
/// STM32F411.
#[cfg(not(feature = "nucleo-f411re"))]
const IRQS: usize = 32;
#[cfg(feature = "nucleo-f411re")]
const IRQS: usize = 86;

unsafe extern "C" {
    fn DefaultHandler();
}

/// The device part of the vector table (cortex-m-rt's `device` feature):
/// no program enables an interrupt, so every entry is the default handler.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); IRQS] = [DefaultHandler; IRQS];

unsafe extern "C" {
    // From cortex-m-rt's link.x: the stack grows down from `_stack_start`
    // to `_stack_end`, and `paint-stack` fills that range with 0xCCCC_CCCC.
    static _stack_start: u32;
    static _stack_end: u32;
}

/// Deepest stack use so far, in bytes: the distance from the top of the
/// stack to the lowest word that no longer holds cortex-m-rt's paint.
pub fn stack_high_water() -> usize {
    let top = &raw const _stack_start as usize;
    let mut p = &raw const _stack_end as usize;
    while p < top {
        // SAFETY: [p, top) is the stack region, word aligned (link.x asserts
        // it); reading a word of it is always valid.
        let w = unsafe { core::ptr::read_volatile(p as *const u32) };
        if w != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        p += 4;
    }
    top - p
}

unsafe extern "C" {
    // From cortex-m-rt's link.x: the first byte of `.data`, the first
    // section in RAM.
    static __sdata: u32;
}

/// RAM taken by statics (`.data`, `.bss`, `.uninit`), in bytes: from the
/// start of RAM to the bottom of the stack.
pub fn static_ram() -> usize {
    (&raw const _stack_end as usize) - (&raw const __sdata as usize)
}

/// Size of the stack region (RAM not taken by statics), in bytes.
pub fn stack_size() -> usize {
    (&raw const _stack_start as usize) - (&raw const _stack_end as usize)
}

/// Reports the stack high-water mark and the stack's size:
/// `stack high-water: <bytes> bytes (of <bytes>)`.
pub fn report_stack() {
    report!(
        "stack high-water: ",
        stack_high_water(),
        " bytes (of ",
        stack_size(),
        ")"
    );
}

/// Index of the largest logit, the first one on a tie (like `torch.argmax`).
pub fn argmax(logits: &[i8]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}
