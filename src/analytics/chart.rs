//! Bar charts for report mail, drawn pixel by pixel and encoded as PNG (the `png`
//! crate, in memory). No text is drawn: titles, axes and values go in the mail's HTML
//! beside the image (so Chinese needs no font here), which also keeps the output the
//! same bytes for the same figures. Pure: no files, no clock.

/// Which way the bars run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Orientation {
    /// Columns rising from the bottom, left to right (a series over time).
    Columns,
    /// Rows from the left edge, top to bottom (a ranking; the HTML lists the names
    /// in the same order).
    Rows,
}

/// The palette: background, grid, bar, baseline, the highlighted (largest) bar.
const PALETTE: [u8; 15] = [
    0xff, 0xff, 0xff, // background
    0xe5, 0xe7, 0xeb, // grid lines at quarters of the largest value
    0x1f, 0x3a, 0x5f, // bars (the site's mail colour)
    0x9c, 0xa3, 0xaf, // baseline
    0xc2, 0x41, 0x0c, // the largest bar of a ranking
];
const BACKGROUND: u8 = 0;
const GRID: u8 = 1;
const BAR: u8 = 2;
const BASELINE: u8 = 3;
const TOP: u8 = 4;
/// Space around the plot, in pixels.
const MARGIN: u32 = 6;

/// A chart's pixels: one palette index per pixel, row by row.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Canvas {
        Canvas { width, height, pixels: vec![BACKGROUND; (width * height) as usize] }
    }

    /// Fills the rectangle `x..x+w`, `y..y+h` (clipped to the canvas).
    fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, colour: u8) {
        for row in y..(y + h).min(self.height) {
            let start = (row * self.width + x.min(self.width)) as usize;
            let end = (row * self.width + (x + w).min(self.width)) as usize;
            self.pixels[start..end].fill(colour);
        }
    }

    /// # Panics
    /// Never: writing PNG into memory cannot fail for a canvas of these sizes.
    fn png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(&PALETTE[..]);
        enc.set_compression(png::Compression::High);
        let mut w = enc.write_header().expect("PNG header into memory");
        w.write_image_data(&self.pixels).expect("PNG data into memory");
        w.finish().expect("PNG end into memory");
        out
    }
}

/// `values` as bars in a `width` × `height` PNG; each bar's length is its share of
/// the largest value (all zero: only the grid and baseline). Sizes below 2 × the
/// margin + 1 are raised to it.
pub(crate) fn bars(values: &[u64], orientation: Orientation, width: u32, height: u32) -> Vec<u8> {
    let (width, height) = (width.max(2 * MARGIN + 8), height.max(2 * MARGIN + 8));
    let mut c = Canvas::new(width, height);
    let (pw, ph) = (width - 2 * MARGIN, height - 2 * MARGIN);
    let max = values.iter().copied().max().unwrap_or(0);
    // The length of a bar of `v` over `full` pixels, rounded to the nearest pixel.
    let scale = |v: u64, full: u32| -> u32 {
        if max == 0 {
            return 0;
        }
        u32::try_from((u128::from(v) * u128::from(full) * 2 + u128::from(max)) / (u128::from(max) * 2)).unwrap_or(full)
    };
    let n = u32::try_from(values.len()).unwrap_or(u32::MAX).max(1);
    let top = values.iter().position(|v| *v == max && max > 0);
    match orientation {
        Orientation::Columns => {
            for q in 1..=4 {
                c.fill(MARGIN, MARGIN + ph - ph * q / 4, pw, 1, GRID);
            }
            let slot = pw / n;
            let bar = (slot * 7 / 10).max(1);
            for (i, v) in (0u32..).zip(values) {
                let h = scale(*v, ph);
                c.fill(MARGIN + i * slot + (slot - bar) / 2, MARGIN + ph - h, bar, h, BAR);
            }
            c.fill(MARGIN, MARGIN + ph, pw, 1, BASELINE);
        }
        Orientation::Rows => {
            for q in 1..=4 {
                c.fill(MARGIN + pw * q / 4 - 1, MARGIN, 1, ph, GRID);
            }
            let slot = ph / n;
            let bar = (slot * 7 / 10).max(1);
            for (i, v) in (0u32..).zip(values) {
                let colour = if top == Some(i as usize) { TOP } else { BAR };
                c.fill(MARGIN, MARGIN + i * slot + (slot - bar) / 2, scale(*v, pw), bar, colour);
            }
            c.fill(MARGIN - 1, MARGIN, 1, ph, BASELINE);
        }
    }
    c.png()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PNG's size and its pixels as palette indices.
    fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut d = png::Decoder::new(std::io::Cursor::new(png));
        d.set_transformations(png::Transformations::IDENTITY);
        let mut r = d.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Indexed);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn at(pixels: &[u8], width: u32, x: u32, y: u32) -> u8 {
        pixels[(y * width + x) as usize]
    }

    #[test]
    fn columns_rise_in_proportion_to_their_values() {
        let png = bars(&[4, 2, 0, 1], Orientation::Columns, 112, 62);
        let (w, h, px) = decode(&png);
        assert_eq!((w, h), (112, 62));
        // Plot 100 × 50 from (6, 6); four slots of 25 px, bars 17 px wide from x = 10.
        let column = |slot: u32| (0..h).filter(|y| at(&px, w, 6 + slot * 25 + 12, *y) == BAR).count();
        assert_eq!([column(0), column(1), column(2), column(3)], [50, 25, 0, 13]);
        // Between bars: background and grid only.
        assert!((0..h).all(|y| at(&px, w, 6 + 25, y) != BAR));
        // The baseline under the plot.
        assert_eq!(at(&px, w, 50, 56), BASELINE);
    }

    #[test]
    fn rows_rank_and_the_largest_stands_out() {
        let png = bars(&[3, 6], Orientation::Rows, 212, 52);
        let (w, _, px) = decode(&png);
        // Plot 200 × 40; rows of 20 px; the middle line of each.
        let row = |i: u32, colour: u8| (0..w).filter(|x| at(&px, w, *x, 6 + i * 20 + 10) == colour).count();
        assert_eq!((row(0, BAR), row(1, TOP)), (100, 200));
        assert_eq!(row(0, TOP), 0);
    }

    #[test]
    fn the_same_figures_give_the_same_bytes_and_nothing_is_drawn_for_nothing() {
        let a = bars(&[1, 5, 3], Orientation::Columns, 560, 180);
        assert_eq!(a, bars(&[1, 5, 3], Orientation::Columns, 560, 180));
        assert_ne!(a, bars(&[1, 5, 4], Orientation::Columns, 560, 180));
        assert!(a.len() < 4096, "a bar chart compresses well: {} bytes", a.len());
        let (w, h, px) = decode(&bars(&[0, 0], Orientation::Rows, 100, 60));
        assert_eq!((w, h), (100, 60));
        assert!(!px.contains(&BAR) && !px.contains(&TOP));
        let (_, _, px) = decode(&bars(&[], Orientation::Columns, 1, 1));
        assert!(!px.contains(&BAR));
    }
}
