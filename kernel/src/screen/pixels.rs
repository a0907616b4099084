//! Glyph rendering into a linear framebuffer of any pitch and 16, 24 or 32 bits per pixel,
//! with the channel positions GRUB reports (Multiboot2 framebuffer tag, RGB type).
//!
//! Glyphs are `font8x8`'s public-domain 8×8 bitmaps (bit 0 is the leftmost pixel), scaled by
//! a whole factor so the text stays legible on large modes.

use super::{Cell, Style};

/// Width and height of one unscaled glyph, in pixels.
pub const GLYPH: usize = 8;

/// Where a colour channel sits in a pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Bit position of the channel's lowest bit.
    pub position: u8,
    /// Bits in the channel.
    pub size: u8,
}

/// A framebuffer's geometry and pixel format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes from one scan line to the next.
    pub pitch: usize,
    /// Visible pixels per line.
    pub width: usize,
    /// Lines.
    pub height: usize,
    /// Bits per pixel: 16, 24 or 32.
    pub bpp: u8,
    /// Red channel.
    pub red: Channel,
    /// Green channel.
    pub green: Channel,
    /// Blue channel.
    pub blue: Channel,
}

/// Why a framebuffer cannot be drawn on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Not 16, 24 or 32 bits per pixel (8-bit palettes are not drawn).
    #[error("framebuffer has {0} bits per pixel; the status screen draws 16, 24 or 32")]
    UnsupportedDepth(u8),
    /// The pitch is shorter than a line of pixels.
    #[error("framebuffer pitch {pitch} is shorter than {width} pixels")]
    PitchTooShort {
        /// Bytes per line.
        pitch: usize,
        /// Pixels per line.
        width: usize,
    },
    /// Smaller than one glyph.
    #[error("framebuffer {0}x{1} is too small for text")]
    TooSmall(usize, usize),
    /// A channel that does not fit in the pixel.
    #[error("framebuffer colour channel lies outside its {0}-bit pixel")]
    BadChannel(u8),
}

impl Layout {
    /// Checks that the layout is drawable.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if !matches!(self.bpp, 16 | 24 | 32) {
            return Err(LayoutError::UnsupportedDepth(self.bpp));
        }
        if self.pitch < self.width * self.bytes_per_pixel() {
            return Err(LayoutError::PitchTooShort {
                pitch: self.pitch,
                width: self.width,
            });
        }
        if self.width < GLYPH || self.height < GLYPH {
            return Err(LayoutError::TooSmall(self.width, self.height));
        }
        for c in [self.red, self.green, self.blue] {
            if c.size == 0
                || c.size > 8
                || u32::from(c.position) + u32::from(c.size) > u32::from(self.bpp)
            {
                return Err(LayoutError::BadChannel(self.bpp));
            }
        }
        Ok(())
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bpp).div_ceil(8)
    }

    /// Bytes the framebuffer spans.
    pub fn len(&self) -> usize {
        self.pitch * self.height
    }

    /// Whether the framebuffer spans no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Glyph scale: 2 when the screen still holds 60 columns of doubled glyphs, else 1.
    pub fn scale(&self) -> usize {
        if self.width / (GLYPH * 2) >= 60 && self.height / (GLYPH * 2) >= 20 {
            2
        } else {
            1
        }
    }

    /// The text grid the framebuffer holds at [`Layout::scale`].
    pub fn grid(&self) -> (usize, usize) {
        let cell = GLYPH * self.scale();
        (self.width / cell, self.height / cell)
    }

    /// The pixel value of an 8-bit-per-channel colour.
    pub fn encode(&self, (r, g, b): (u8, u8, u8)) -> u32 {
        let channel = |value: u8, c: Channel| -> u32 {
            (u32::from(value) >> (8 - c.size.min(8))) << c.position
        };
        channel(r, self.red) | channel(g, self.green) | channel(b, self.blue)
    }
}

/// Foreground and background of a style, as RGB (the VGA palette's blue screen).
pub fn colours(style: Style) -> ((u8, u8, u8), (u8, u8, u8)) {
    const BLUE: (u8, u8, u8) = (0x00, 0x00, 0xaa);
    const GREY: (u8, u8, u8) = (0xaa, 0xaa, 0xaa);
    const WHITE: (u8, u8, u8) = (0xff, 0xff, 0xff);
    const BLACK: (u8, u8, u8) = (0x00, 0x00, 0x00);
    const CYAN: (u8, u8, u8) = (0x55, 0xff, 0xff);
    const YELLOW: (u8, u8, u8) = (0xff, 0xff, 0x55);
    match style {
        Style::Title => (BLACK, GREY),
        Style::Label | Style::Footer => (GREY, BLUE),
        Style::Value => (WHITE, BLUE),
        Style::Highlight => (CYAN, BLUE),
        Style::Warning => (YELLOW, BLUE),
    }
}

/// The 8×8 bitmap of an ASCII byte (`?` for anything else).
pub fn glyph(ch: u8) -> [u8; 8] {
    let index = if ch < 128 { ch } else { b'?' };
    font8x8::legacy::BASIC_LEGACY[usize::from(index)]
}

/// Draws `cell` at text position (`col`, `row`) into `fb`, a buffer laid out as `layout`
/// says. Cells outside the buffer are skipped: never a write past its end.
pub fn draw_cell(fb: &mut [u8], layout: &Layout, col: usize, row: usize, cell: Cell) {
    let scale = layout.scale();
    let size = GLYPH * scale;
    let (x0, y0) = (col * size, row * size);
    if x0 + size > layout.width || y0 + size > layout.height {
        return;
    }
    let (fg, bg) = colours(cell.style);
    let (fg, bg) = (layout.encode(fg), layout.encode(bg));
    let bytes = layout.bytes_per_pixel();
    let bitmap = glyph(cell.ch);
    for y in 0..size {
        let bits = bitmap[y / scale];
        let line = (y0 + y) * layout.pitch;
        for x in 0..size {
            let on = bits >> (x / scale) & 1 == 1;
            let value = if on { fg } else { bg };
            let at = line + (x0 + x) * bytes;
            let Some(pixel) = fb.get_mut(at..at + bytes) else {
                return;
            };
            pixel.copy_from_slice(&value.to_le_bytes()[..bytes]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn xrgb(width: usize, height: usize, pitch: usize) -> Layout {
        Layout {
            pitch,
            width,
            height,
            bpp: 32,
            red: Channel {
                position: 16,
                size: 8,
            },
            green: Channel {
                position: 8,
                size: 8,
            },
            blue: Channel {
                position: 0,
                size: 8,
            },
        }
    }

    fn pixel(fb: &[u8], layout: &Layout, x: usize, y: usize) -> u32 {
        let at = y * layout.pitch + x * layout.bytes_per_pixel();
        let mut word = [0u8; 4];
        word[..layout.bytes_per_pixel()].copy_from_slice(&fb[at..at + layout.bytes_per_pixel()]);
        u32::from_le_bytes(word)
    }

    /// Reads a glyph back from the pixels: 1 where the foreground colour is.
    fn read_back(fb: &[u8], layout: &Layout, col: usize, row: usize, fg: u32) -> [u8; 8] {
        let scale = layout.scale();
        let mut rows = [0u8; 8];
        for (gy, bits) in rows.iter_mut().enumerate() {
            for gx in 0..8 {
                let x = col * 8 * scale + gx * scale;
                let y = row * 8 * scale + gy * scale;
                if pixel(fb, layout, x, y) == fg {
                    *bits |= 1 << gx;
                }
            }
        }
        rows
    }

    #[test]
    fn glyphs_land_at_their_cell_in_the_style_colours() {
        let layout = xrgb(640, 480, 640 * 4 + 64);
        layout.validate().unwrap();
        assert_eq!(layout.scale(), 1);
        assert_eq!(layout.grid(), (80, 60));
        let mut fb = vec![0u8; layout.len()];
        let cell = Cell {
            ch: b'K',
            style: Style::Value,
        };
        draw_cell(&mut fb, &layout, 3, 2, cell);
        let white = layout.encode((0xff, 0xff, 0xff));
        let blue = layout.encode((0, 0, 0xaa));
        assert_eq!(white, 0x00ff_ffff);
        assert_eq!(blue, 0x0000_00aa);
        assert_eq!(read_back(&fb, &layout, 3, 2, white), glyph(b'K'));
        // The cell's background is painted, the neighbours untouched.
        assert_eq!(pixel(&fb, &layout, 3 * 8 + 7, 2 * 8 + 7), blue);
        assert_eq!(pixel(&fb, &layout, 4 * 8, 2 * 8), 0);
        assert_eq!(pixel(&fb, &layout, 3 * 8, 2 * 8 - 1), 0);
    }

    #[test]
    fn big_modes_double_the_glyphs() {
        let layout = xrgb(1280, 800, 1280 * 4);
        assert_eq!(layout.scale(), 2);
        assert_eq!(layout.grid(), (80, 50));
        let mut fb = vec![0u8; layout.len()];
        draw_cell(
            &mut fb,
            &layout,
            79,
            49,
            Cell {
                ch: b'A',
                style: Style::Highlight,
            },
        );
        let cyan = layout.encode((0x55, 0xff, 0xff));
        assert_eq!(read_back(&fb, &layout, 79, 49, cyan), glyph(b'A'));
        // Each font pixel is a 2x2 block.
        let x = 79 * 16 + 2 * 2;
        let y = 49 * 16;
        assert_eq!(glyph(b'A')[0] >> 2 & 1, 1);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            assert_eq!(pixel(&fb, &layout, x + dx, y + dy), cyan);
        }
    }

    #[test]
    fn sixteen_and_twenty_four_bit_pixels() {
        let rgb565 = Layout {
            pitch: 800 * 2,
            width: 800,
            height: 600,
            bpp: 16,
            red: Channel {
                position: 11,
                size: 5,
            },
            green: Channel {
                position: 5,
                size: 6,
            },
            blue: Channel {
                position: 0,
                size: 5,
            },
        };
        rgb565.validate().unwrap();
        assert_eq!(rgb565.encode((0xff, 0xff, 0xff)), 0xffff);
        assert_eq!(rgb565.encode((0, 0, 0xaa)), 0xaa >> 3);
        let mut fb = vec![0u8; rgb565.len()];
        draw_cell(
            &mut fb,
            &rgb565,
            1,
            1,
            Cell {
                ch: b'x',
                style: Style::Value,
            },
        );
        assert_eq!(read_back(&fb, &rgb565, 1, 1, 0xffff), glyph(b'x'));

        let bgr24 = Layout {
            pitch: 1024 * 3,
            width: 1024,
            height: 768,
            bpp: 24,
            red: Channel {
                position: 0,
                size: 8,
            },
            green: Channel {
                position: 8,
                size: 8,
            },
            blue: Channel {
                position: 16,
                size: 8,
            },
        };
        bgr24.validate().unwrap();
        let mut fb = vec![0u8; bgr24.len()];
        draw_cell(
            &mut fb,
            &bgr24,
            0,
            0,
            Cell {
                ch: b'#',
                style: Style::Warning,
            },
        );
        let yellow = bgr24.encode((0xff, 0xff, 0x55));
        assert_eq!(yellow, 0x55ffff);
        assert_eq!(read_back(&fb, &bgr24, 0, 0, yellow), glyph(b'#'));
    }

    #[test]
    fn cells_outside_the_buffer_are_skipped() {
        let layout = xrgb(100, 20, 400);
        let mut fb = vec![0u8; layout.len()];
        let before = fb.clone();
        draw_cell(
            &mut fb,
            &layout,
            12,
            0,
            Cell {
                ch: b'A',
                style: Style::Value,
            },
        );
        draw_cell(
            &mut fb,
            &layout,
            0,
            3,
            Cell {
                ch: b'A',
                style: Style::Value,
            },
        );
        assert_eq!(fb, before);
        // A buffer shorter than the layout says is not overrun.
        let mut short: Vec<u8> = vec![0u8; 100];
        draw_cell(
            &mut short,
            &layout,
            0,
            0,
            Cell {
                ch: b'A',
                style: Style::Value,
            },
        );
    }

    #[test]
    fn undrawable_layouts_are_refused() {
        let mut l = xrgb(640, 480, 640 * 4);
        l.bpp = 8;
        assert_eq!(l.validate(), Err(LayoutError::UnsupportedDepth(8)));
        let l = xrgb(640, 480, 100);
        assert!(matches!(
            l.validate(),
            Err(LayoutError::PitchTooShort { .. })
        ));
        let l = xrgb(4, 4, 16);
        assert_eq!(l.validate(), Err(LayoutError::TooSmall(4, 4)));
        let mut l = xrgb(640, 480, 640 * 4);
        l.red.position = 30;
        assert_eq!(l.validate(), Err(LayoutError::BadChannel(32)));
    }
}
