//! Plots still work where no font is installed (`LENET_FONT=none`): lines
//! and cells are drawn, text is left out. A separate test binary, since the
//! font choice is made once per process.

use lenet_host::plots::{Series, font_available, plot_confusion, plot_curves};

#[test]
fn plots_without_a_font() {
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("LENET_FONT", "none") };
    assert!(!font_available());
    let d = tempfile::tempdir().unwrap();
    let s = [Series {
        name: "train".into(),
        points: vec![(1.0, 0.9), (2.0, 0.5)],
    }];
    let p = d.path().join("loss.png");
    plot_curves(&p, "Loss", "loss", &s).unwrap();
    let img = image::open(&p).unwrap().to_rgb8();
    assert!(img.pixels().any(|px| px.0 != [255, 255, 255]));
    let mut m = [[1u64; 10]; 10];
    m[3][3] = 50;
    plot_confusion(&d.path().join("c.png"), "c", &m).unwrap();
}
