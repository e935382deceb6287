//! Counts the work a piece of code takes.
//!
//! - QEMU (default build): the CMSDK APB timer 0 of the mps2-an386 image
//!   (base 0x4000_0000; CTRL +0, VALUE +4 counting down, RELOAD +8) runs at
//!   25 MHz of QEMU's virtual clock. Under `-icount shift=6` every
//!   instruction advances that clock by 64 ns, so
//!   `instructions = ticks * 40 / 64`. (QEMU's DWT cycle counter reads 0.)
//! - Nucleo-F411RE (`nucleo-f411re`): the DWT cycle counter.
//!
//! [`Meter::new`] measures the cost of reading the counter itself and
//! [`Meter::stop`] subtracts it, so an empty span reads 0.

/// What the meter counts, for report lines.
#[cfg(not(feature = "nucleo-f411re"))]
pub const UNIT: &str = "instructions";
/// What the meter counts, for report lines.
#[cfg(feature = "nucleo-f411re")]
pub const UNIT: &str = "cycles";

/// A started counter; see the module docs.
pub struct Meter {
    overhead: u32,
}

#[cfg(not(feature = "nucleo-f411re"))]
mod hw {
    const TIMER0: usize = 0x4000_0000;
    const CTRL: *mut u32 = TIMER0 as *mut u32;
    const VALUE: *mut u32 = (TIMER0 + 4) as *mut u32;
    const RELOAD: *mut u32 = (TIMER0 + 8) as *mut u32;

    pub fn init() {
        // SAFETY: the timer's registers on the mps2-an386 memory map; this
        // program is their only user.
        unsafe {
            CTRL.write_volatile(0);
            RELOAD.write_volatile(u32::MAX);
            VALUE.write_volatile(u32::MAX);
            CTRL.write_volatile(1); // enable, internal clock, no interrupt
        }
    }

    /// Timer ticks since `init` (the timer counts down), wrapping.
    #[inline(always)]
    pub fn now() -> u32 {
        // SAFETY: as in `init`.
        u32::MAX - unsafe { VALUE.read_volatile() }
    }

    /// Ticks of 40 ns to instructions of 64 ns.
    pub fn to_units(ticks: u32) -> u32 {
        ((ticks as u64 * 40 + 32) / 64) as u32
    }
}

#[cfg(feature = "nucleo-f411re")]
mod hw {
    use cortex_m::peripheral::DWT;

    pub fn init() {
        // SAFETY: single-threaded start-up; nothing else owns DCB and DWT.
        let mut p = unsafe { cortex_m::Peripherals::steal() };
        p.DCB.enable_trace();
        DWT::unlock();
        p.DWT.set_cycle_count(0);
        p.DWT.enable_cycle_counter();
    }

    #[inline(always)]
    pub fn now() -> u32 {
        DWT::cycle_count()
    }

    pub fn to_units(cycles: u32) -> u32 {
        cycles
    }
}

impl Meter {
    /// Starts the hardware counter and measures its own overhead.
    pub fn new() -> Self {
        hw::init();
        let mut overhead = u32::MAX;
        for _ in 0..4 {
            let t = hw::now();
            overhead = overhead.min(hw::now().wrapping_sub(t));
        }
        Self { overhead }
    }

    /// A timestamp to pass to [`Meter::stop`].
    #[inline(always)]
    pub fn start(&self) -> u32 {
        hw::now()
    }

    /// Units (instructions or cycles) since `start`, overhead removed.
    #[inline(always)]
    pub fn stop(&self, start: u32) -> u32 {
        let ticks = hw::now().wrapping_sub(start).saturating_sub(self.overhead);
        hw::to_units(ticks)
    }
}

/// `total / n` (0 for none), by shift and subtract: a u64 division would
/// link 0.9 KB of compiler-builtins for one call.
pub fn mean(total: u64, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let (mut q, mut r) = (0u64, 0u64);
    for bit in (0..64).rev() {
        r = (r << 1) | ((total >> bit) & 1);
        if r >= u64::from(n) {
            r -= u64::from(n);
            q |= 1 << bit;
        }
    }
    q as u32
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}
