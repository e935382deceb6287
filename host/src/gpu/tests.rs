//! The CUDA trainer on the emulated device.
