//! The status screen on the local display: what an operator without a serial cable sees —
//! hostname, version, the management address (or "waiting for DHCP"), the web page's URL,
//! how many VMs run and where the serial console is.
//!
//! Pure and host-tested: [`Status`] → [`layout`] → a [`TextGrid`] of styled cells, and a
//! [`Screen`] that draws only the cells that changed on a [`Display`]. Two displays exist on
//! bare metal (`hw`): the VGA text buffer at 0xB8000 (BIOS boots, 80×25) and the linear
//! framebuffer GRUB hands over (UEFI boots), whose glyphs [`pixels`] renders with the
//! `font8x8` crate's public-domain 8×8 font.

pub mod pixels;

#[cfg(target_os = "none")]
pub mod hw;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// How a cell is drawn; each display maps it to its colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// The title bar (inverse).
    Title,
    /// A field's name.
    Label,
    /// A field's value.
    Value,
    /// What the operator needs to type somewhere: the address and the URL.
    Highlight,
    /// A problem ("no network") or a wait ("waiting for DHCP").
    Warning,
    /// The hint at the bottom.
    Footer,
}

/// One character cell: an ASCII byte (anything else is shown as `?`) and its style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The character, printable ASCII or a space.
    pub ch: u8,
    /// How it is drawn.
    pub style: Style,
}

impl Cell {
    /// An empty cell of the background.
    pub const BLANK: Cell = Cell {
        ch: b' ',
        style: Style::Value,
    };
}

/// The state of the management network, as the screen shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// An address: static or from a DHCP lease.
    Address {
        /// `10.0.2.15/24`.
        cidr: String,
        /// The address alone, for the URL.
        ip: String,
        /// Whether it came from DHCP.
        dhcp: bool,
    },
    /// A NIC is up, DHCP has no lease yet.
    WaitingForDhcp,
    /// No management network (no NIC, or it failed to start): the reason.
    Down(String),
}

/// Everything the status screen shows. Compared as a whole: a change redraws what moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The configured hostname.
    pub hostname: String,
    /// Keel's version.
    pub version: &'static str,
    /// The management address.
    pub network: Network,
    /// The HTTP API and web page's port.
    pub http_port: u16,
    /// With HTTPS on: its port and the certificate's SHA-256 fingerprint.
    pub https: Option<(u16, String)>,
    /// VMs running (halted guests count: they are alive).
    pub vms_running: usize,
    /// The serial console, e.g. `ttyS1 (0x2f8) 115200`.
    pub console: String,
}

/// Characters per row and rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextGrid {
    cols: usize,
    rows: usize,
    cells: Vec<Cell>,
}

impl TextGrid {
    /// A blank grid.
    pub fn new(cols: usize, rows: usize) -> TextGrid {
        TextGrid {
            cols,
            rows,
            cells: alloc::vec![Cell::BLANK; cols * rows],
        }
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The cell at (`col`, `row`); blank outside the grid.
    pub fn cell(&self, col: usize, row: usize) -> Cell {
        if col < self.cols && row < self.rows {
            self.cells[row * self.cols + col]
        } else {
            Cell::BLANK
        }
    }

    /// The characters of one row, trailing blanks trimmed (for tests and the log).
    pub fn row_text(&self, row: usize) -> String {
        let text: String = (0..self.cols)
            .map(|c| char::from(self.cell(c, row).ch))
            .collect();
        String::from(text.trim_end())
    }

    /// Writes `text` from (`col`, `row`) in `style`, cut at the right edge; returns the
    /// column after the last character written.
    fn put(&mut self, col: usize, row: usize, text: &str, style: Style) -> usize {
        let mut c = col;
        if row >= self.rows {
            return c;
        }
        for ch in text.chars() {
            if c >= self.cols {
                break;
            }
            let byte = if ch.is_ascii_graphic() || ch == ' ' {
                ch as u8
            } else {
                b'?'
            };
            self.cells[row * self.cols + c] = Cell { ch: byte, style };
            c += 1;
        }
        c
    }

    fn fill_row(&mut self, row: usize, style: Style) {
        for c in 0..self.cols {
            self.cells[row * self.cols + c] = Cell { ch: b' ', style };
        }
    }
}

/// Labels are padded to this width so the values line up.
const LABEL_WIDTH: usize = 17;
/// Left margin.
const MARGIN: usize = 2;

/// Lays out `status` on a `cols`×`rows` grid: a title bar, the fields one per line (a value
/// too long for its line continues on the next, under the value column), and the footer on
/// the last row. A grid too narrow for the label column puts values under their labels.
pub fn layout(status: &Status, cols: usize, rows: usize) -> TextGrid {
    let mut grid = TextGrid::new(cols, rows);
    if cols == 0 || rows == 0 {
        return grid;
    }
    grid.fill_row(0, Style::Title);
    let mut title = String::new();
    let _ = write!(title, "Keel {}", status.version);
    grid.put(MARGIN.min(cols), 0, &title, Style::Title);

    let (address, address_style, url) = match &status.network {
        Network::Address { cidr, ip, dhcp } => {
            let mut a = cidr.clone();
            a.push_str(if *dhcp { " (DHCP)" } else { " (static)" });
            let mut url = String::new();
            match &status.https {
                Some((443, _)) => {
                    let _ = write!(url, "https://{ip}/");
                }
                Some((port, _)) => {
                    let _ = write!(url, "https://{ip}:{port}/");
                }
                None => {
                    let _ = write!(url, "http://{ip}:{}/", status.http_port);
                }
            }
            (a, Style::Highlight, Some(url))
        }
        Network::WaitingForDhcp => (String::from("waiting for DHCP"), Style::Warning, None),
        Network::Down(reason) => {
            let mut a = String::from("no network: ");
            a.push_str(reason);
            (a, Style::Warning, None)
        }
    };
    let mut vms = String::new();
    let _ = write!(vms, "{}", status.vms_running);
    let mut console = status.console.clone();
    console.push_str(", 8N1");
    let mut fields: Vec<(&str, String, Style)> = alloc::vec![
        ("hostname", status.hostname.clone(), Style::Value),
        ("management", address, address_style),
    ];
    if let Some(url) = url {
        fields.push(("web page and API", url, Style::Highlight));
    }
    if let Some((_, fingerprint)) = &status.https {
        // Two rows of 16 bytes: the whole fingerprint fits an 80-column screen.
        let (first, second) = fingerprint.split_at(fingerprint.len().min(47));
        fields.push(("cert SHA-256", String::from(first), Style::Value));
        if !second.is_empty() {
            fields.push((
                "",
                String::from(second.trim_start_matches(':')),
                Style::Value,
            ));
        }
    }
    fields.push(("VMs running", vms, Style::Value));
    fields.push(("serial console", console, Style::Value));

    let narrow = cols < MARGIN + LABEL_WIDTH + 12;
    let value_col = if narrow {
        MARGIN + 2
    } else {
        MARGIN + LABEL_WIDTH
    };
    let mut row = 2;
    // The footer keeps the last row.
    let last_field_row = rows.saturating_sub(2);
    for (label, value, style) in fields {
        if row > last_field_row {
            break;
        }
        grid.put(MARGIN, row, label, Style::Label);
        if narrow {
            row += 1;
        }
        let width = cols.saturating_sub(value_col).max(1);
        let chars: Vec<char> = value.chars().collect();
        for chunk in chars.chunks(width) {
            if row > last_field_row {
                break;
            }
            let piece: String = chunk.iter().collect();
            grid.put(value_col, row, &piece, style);
            row += 1;
        }
        if chars.is_empty() {
            row += 1;
        }
    }
    if rows >= 2 {
        grid.put(
            MARGIN,
            rows - 1,
            "Manage Keel at the address above, or on the serial console.",
            Style::Footer,
        );
    }
    grid
}

/// Where a grid is drawn: a text buffer or a framebuffer.
pub trait Display {
    /// The grid the display holds, in characters.
    fn size(&self) -> (usize, usize);
    /// Draws one cell.
    fn draw(&mut self, col: usize, row: usize, cell: Cell);
}

/// The status screen on one display: remembers what it shows, so an update draws only the
/// cells that changed, and nothing when the status did not change.
pub struct Screen<D: Display> {
    display: D,
    shown: Option<(Status, TextGrid)>,
}

impl<D: Display> Screen<D> {
    /// A screen on `display`; nothing is drawn until [`Screen::show`].
    pub fn new(display: D) -> Screen<D> {
        Screen {
            display,
            shown: None,
        }
    }

    /// Shows `status`; returns how many cells were drawn (0 when nothing changed).
    pub fn show(&mut self, status: &Status) -> usize {
        if self.shown.as_ref().is_some_and(|(s, _)| s == status) {
            return 0;
        }
        let (cols, rows) = self.display.size();
        let grid = layout(status, cols, rows);
        let mut drawn = 0;
        for row in 0..rows {
            for col in 0..cols {
                let cell = grid.cell(col, row);
                let before = self.shown.as_ref().map(|(_, g)| g.cell(col, row));
                if before != Some(cell) {
                    self.display.draw(col, row, cell);
                    drawn += 1;
                }
            }
        }
        self.shown = Some((status.clone(), grid));
        drawn
    }

    /// The display, for inspection.
    pub fn display(&self) -> &D {
        &self.display
    }
}

/// VGA text attribute (background << 4 | foreground) for a style: white on blue, like a
/// firmware set-up screen, readable on any monitor.
pub fn vga_attribute(style: Style) -> u8 {
    const BLUE: u8 = 0x1;
    const WHITE: u8 = 0xf;
    const GREY: u8 = 0x7;
    const YELLOW: u8 = 0xe;
    const LIGHT_CYAN: u8 = 0xb;
    const BLACK: u8 = 0x0;
    match style {
        Style::Title => GREY << 4 | BLACK,
        Style::Label => BLUE << 4 | GREY,
        Style::Value => BLUE << 4 | WHITE,
        Style::Highlight => BLUE << 4 | LIGHT_CYAN,
        Style::Warning => BLUE << 4 | YELLOW,
        Style::Footer => BLUE << 4 | GREY,
    }
}

/// The 16-bit word of one VGA text cell: character low, attribute high.
pub fn vga_word(cell: Cell) -> u16 {
    u16::from(cell.ch) | u16::from(vga_attribute(cell.style)) << 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(network: Network) -> Status {
        Status {
            hostname: String::from("keel-lab-7"),
            version: "0.9.0",
            network,
            http_port: 8080,
            https: None,
            vms_running: 2,
            console: String::from("ttyS1 (0x2f8) 115200"),
        }
    }

    fn leased() -> Network {
        Network::Address {
            cidr: String::from("10.0.2.15/24"),
            ip: String::from("10.0.2.15"),
            dhcp: true,
        }
    }

    fn text(grid: &TextGrid) -> String {
        let mut out = String::new();
        for r in 0..grid.rows() {
            out.push_str(&grid.row_text(r));
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_screen_names_the_address_url_and_console() {
        let grid = layout(&status(leased()), 80, 25);
        let all = text(&grid);
        assert_eq!(grid.row_text(0), "  Keel 0.9.0");
        assert!(all.contains("  hostname         keel-lab-7\n"), "{all}");
        assert!(
            all.contains("management       10.0.2.15/24 (DHCP)\n"),
            "{all}"
        );
        assert!(
            all.contains("web page and API http://10.0.2.15:8080/\n"),
            "{all}"
        );
        assert!(all.contains("VMs running      2\n"), "{all}");
        assert!(
            all.contains("serial console   ttyS1 (0x2f8) 115200, 8N1\n"),
            "{all}"
        );
        assert!(grid.row_text(24).starts_with("  Manage Keel"), "{all}");
        assert_eq!(grid.cell(0, 0).style, Style::Title);
        assert_eq!(
            grid.cell(79, 0).style,
            Style::Title,
            "the title bar spans the row"
        );
        assert_eq!(grid.cell(19, 3).style, Style::Highlight);
    }

    #[test]
    fn without_a_lease_there_is_no_url() {
        let all = text(&layout(&status(Network::WaitingForDhcp), 80, 25));
        assert!(all.contains("management       waiting for DHCP\n"), "{all}");
        assert!(!all.contains("http://"), "{all}");
        let down = text(&layout(
            &status(Network::Down("no NIC found".into())),
            80,
            25,
        ));
        assert!(down.contains("no network: no NIC found"), "{down}");
    }

    #[test]
    fn long_values_wrap_under_the_value_column_and_junk_is_replaced() {
        let mut s = status(leased());
        s.hostname = "h".repeat(70) + "\u{e9}";
        let grid = layout(&s, 40, 25);
        assert_eq!(
            grid.row_text(2),
            format!("  hostname         {}", "h".repeat(21))
        );
        assert_eq!(
            grid.row_text(3),
            format!("                   {}", "h".repeat(21))
        );
        assert_eq!(
            grid.row_text(5),
            format!("                   {}?", "h".repeat(7))
        );
        assert!(text(&grid).contains("management       10.0.2.15/24"));
    }

    #[test]
    fn tiny_grids_do_not_panic() {
        for (c, r) in [(0, 0), (1, 1), (5, 2), (20, 3), (30, 30), (200, 2)] {
            let grid = layout(&status(leased()), c, r);
            assert_eq!((grid.cols(), grid.rows()), (c, r));
        }
        let narrow = layout(&status(leased()), 24, 25);
        assert_eq!(narrow.row_text(2), "  hostname");
        assert_eq!(narrow.row_text(3), "    keel-lab-7");
    }

    /// A display that records what it was asked to draw.
    struct Recorder {
        grid: TextGrid,
        draws: usize,
    }

    impl Display for Recorder {
        fn size(&self) -> (usize, usize) {
            (self.grid.cols(), self.grid.rows())
        }
        fn draw(&mut self, col: usize, row: usize, cell: Cell) {
            self.grid.cells[row * self.grid.cols + col] = cell;
            self.draws += 1;
        }
    }

    #[test]
    fn updates_draw_only_what_changed() {
        let mut screen = Screen::new(Recorder {
            grid: TextGrid::new(80, 25),
            draws: 0,
        });
        assert_eq!(screen.show(&status(Network::WaitingForDhcp)), 80 * 25);
        assert_eq!(
            screen.show(&status(Network::WaitingForDhcp)),
            0,
            "no change"
        );
        let drawn = screen.show(&status(leased()));
        assert!(drawn > 0 && drawn < 200, "{drawn} cells for a lease");
        assert_eq!(screen.display().grid, layout(&status(leased()), 80, 25));
        let mut more = status(leased());
        more.vms_running = 3;
        assert_eq!(screen.show(&more), 1, "one digit changed");
    }

    #[test]
    fn vga_words_carry_character_and_colour() {
        let cell = Cell {
            ch: b'K',
            style: Style::Value,
        };
        assert_eq!(vga_word(cell), 0x1f4b);
        assert_eq!(vga_attribute(Style::Title), 0x70);
    }
}
