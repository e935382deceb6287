//! Executes a permanently undefined instruction: the UsageFault escalates to
//! a HardFault, which must end the program with status 3 and its PC
//! (tests/firmware_faults.rs).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use lenet_firmware as _;

#[entry]
fn main() -> ! {
    cortex_m::asm::udf()
}
