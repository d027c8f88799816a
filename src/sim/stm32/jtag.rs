//! The STM32F1's JTAG port: two TAPs in one chain, TDI → boundary-scan TAP (IR 5 bits) →
//! Cortex-M3 JTAG-DP (IR 4 bits) → TDO (RM0008 "JTAG debug port"), each with the IEEE 1149.1
//! state machine, IDCODE selected after Test-Logic-Reset, and BYPASS.
//!
//! JTAG-DP instructions: ABORT 0b1000, DPACC 0b1010, APACC 0b1011 (35-bit data registers:
//! RnW, A[3:2], 32 data bits in; 3 ACK bits and the previous transaction's read result out),
//! IDCODE 0b1110, BYPASS 0b1111. ACK OK/FAULT is 0b010 (this model never answers WAIT: an
//! access to a busy flash array holds the wire instead, as a stalled AHB would).

use crate::sim::stm32::dap::Dap;

/// IEEE 1149.1 TAP controller states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapState {
    TestLogicReset,
    RunTestIdle,
    SelectDr,
    CaptureDr,
    ShiftDr,
    Exit1Dr,
    PauseDr,
    Exit2Dr,
    UpdateDr,
    SelectIr,
    CaptureIr,
    ShiftIr,
    Exit1Ir,
    PauseIr,
    Exit2Ir,
    UpdateIr,
}

impl TapState {
    /// The state after a rising TCK edge with `tms`.
    pub fn next(self, tms: bool) -> TapState {
        use TapState::*;
        match (self, tms) {
            (TestLogicReset, false) => RunTestIdle,
            (TestLogicReset, true) => TestLogicReset,
            (RunTestIdle, false) => RunTestIdle,
            (RunTestIdle, true) => SelectDr,
            (SelectDr, false) => CaptureDr,
            (SelectDr, true) => SelectIr,
            (CaptureDr, false) => ShiftDr,
            (CaptureDr, true) => Exit1Dr,
            (ShiftDr, false) => ShiftDr,
            (ShiftDr, true) => Exit1Dr,
            (Exit1Dr, false) => PauseDr,
            (Exit1Dr, true) => UpdateDr,
            (PauseDr, false) => PauseDr,
            (PauseDr, true) => Exit2Dr,
            (Exit2Dr, false) => ShiftDr,
            (Exit2Dr, true) => UpdateDr,
            (UpdateDr, false) => RunTestIdle,
            (UpdateDr, true) => SelectDr,
            (SelectIr, false) => CaptureIr,
            (SelectIr, true) => TestLogicReset,
            (CaptureIr, false) => ShiftIr,
            (CaptureIr, true) => Exit1Ir,
            (ShiftIr, false) => ShiftIr,
            (ShiftIr, true) => Exit1Ir,
            (Exit1Ir, false) => PauseIr,
            (Exit1Ir, true) => UpdateIr,
            (PauseIr, false) => PauseIr,
            (PauseIr, true) => Exit2Ir,
            (Exit2Ir, false) => ShiftIr,
            (Exit2Ir, true) => UpdateIr,
            (UpdateIr, false) => RunTestIdle,
            (UpdateIr, true) => SelectDr,
        }
    }
}

/// JTAG-DP instructions.
pub mod ir {
    pub const ABORT: u64 = 0b1000;
    pub const DPACC: u64 = 0b1010;
    pub const APACC: u64 = 0b1011;
    pub const IDCODE: u64 = 0b1110;
    pub const BYPASS: u64 = 0b1111;
    /// Boundary-scan TAP.
    pub const BS_IDCODE: u64 = 0b00001;
    pub const BS_BYPASS: u64 = 0b11111;
}

/// ACK OK/FAULT in a JTAG-DP DPACC/APACC capture.
pub const ACK_OK_FAULT: u64 = 0b010;

/// A shift register of up to 64 bits, shifted LSB first.
#[derive(Debug, Clone, Copy, Default)]
struct Shift {
    bits: u64,
    len: u32,
}

impl Shift {
    fn load(bits: u64, len: u32) -> Shift {
        Shift { bits, len }
    }
    fn tdo(&self) -> bool {
        self.bits & 1 != 0
    }
    fn shift(&mut self, tdi: bool) {
        self.bits >>= 1;
        if tdi {
            self.bits |= 1 << (self.len - 1);
        }
    }
}

/// The boundary-scan TAP (its boundary register is not modelled: EXTEST/SAMPLE act as BYPASS).
#[derive(Debug, Clone)]
struct BsTap {
    idcode: u32,
    ir: u64,
    sh: Shift,
}

/// The whole scan chain of one board.
#[derive(Debug, Clone)]
pub struct JtagChain {
    pub state: TapState,
    bs: BsTap,
    dp_ir: u64,
    dp_sh: Shift,
    dp_idcode: u32,
    /// Result of the last DP/AP transaction, captured by the next DPACC/APACC scan.
    last_result: u32,
    pub dap: Dap,
    /// Scans of each kind, for statistics.
    pub dr_scans: u64,
    pub ir_scans: u64,
}

impl JtagChain {
    pub fn new(dap: Dap) -> JtagChain {
        let part = dap.chip.part();
        JtagChain {
            state: TapState::TestLogicReset,
            bs: BsTap { idcode: part.bsc_idcode, ir: ir::BS_IDCODE, sh: Shift::default() },
            dp_ir: ir::IDCODE,
            dp_sh: Shift::default(),
            dp_idcode: part.jtag_dp_idcode,
            last_result: 0,
            dap,
            dr_scans: 0,
            ir_scans: 0,
        }
    }

    /// TRST (or five TMS-high clocks): both TAPs to Test-Logic-Reset, IDCODE selected.
    pub fn tap_reset(&mut self) {
        self.state = TapState::TestLogicReset;
        self.bs.ir = ir::BS_IDCODE;
        self.dp_ir = ir::IDCODE;
    }

    /// TDO as it stands while TCK is low.
    pub fn tdo(&self) -> bool {
        match self.state {
            TapState::ShiftDr | TapState::ShiftIr => self.dp_sh.tdo(),
            _ => false,
        }
    }

    /// One rising TCK edge.
    pub fn clock(&mut self, tms: bool, tdi: bool) {
        match self.state {
            TapState::ShiftDr | TapState::ShiftIr => {
                // The DP TAP takes what the boundary-scan TAP shifts out.
                let mid = self.bs.sh.tdo();
                self.bs.sh.shift(tdi);
                self.dp_sh.shift(mid);
            }
            _ => {}
        }
        let next = self.state.next(tms);
        match next {
            TapState::TestLogicReset => self.tap_reset(),
            TapState::CaptureIr => {
                // Both capture ...01 in IR (IEEE 1149.1).
                self.bs.sh = Shift::load(0b00001, 5);
                self.dp_sh = Shift::load(0b0001, 4);
            }
            TapState::CaptureDr => self.capture_dr(),
            TapState::UpdateIr => {
                self.ir_scans += 1;
                self.bs.ir = self.bs.sh.bits & 0x1F;
                self.dp_ir = self.dp_sh.bits & 0xF;
            }
            TapState::UpdateDr => self.update_dr(),
            _ => {}
        }
        self.state = next;
    }

    fn capture_dr(&mut self) {
        self.bs.sh = if self.bs.ir == ir::BS_IDCODE { Shift::load(self.bs.idcode as u64, 32) } else { Shift::load(0, 1) };
        self.dp_sh = match self.dp_ir {
            ir::IDCODE => Shift::load(self.dp_idcode as u64, 32),
            ir::DPACC | ir::APACC | ir::ABORT => Shift::load((self.last_result as u64) << 3 | ACK_OK_FAULT, 35),
            _ => Shift::load(0, 1),
        };
    }

    fn update_dr(&mut self) {
        self.dr_scans += 1;
        let v = self.dp_sh.bits;
        let rnw = v & 1 != 0;
        let a = (((v >> 1) & 3) << 2) as u8;
        let data = (v >> 3) as u32;
        match self.dp_ir {
            ir::DPACC => {
                self.last_result = if rnw {
                    self.dap.dp_read(a)
                } else {
                    self.dap.dp_write(a, data);
                    0
                };
            }
            ir::APACC => {
                self.last_result = if rnw {
                    self.dap.ap_read(a)
                } else {
                    self.dap.ap_write(a, data);
                    0
                };
            }
            ir::ABORT if data & 1 != 0 => self.dap.abort(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::stm32::{ChipOptions, Stm32Chip, Stm32Fault};
    use crate::stm32::part;

    fn chain() -> JtagChain {
        let chip = Stm32Chip::new(part::find("stm32f103c8").unwrap(), ChipOptions::new(false, Stm32Fault::None));
        JtagChain::new(Dap::new(chip))
    }

    /// Shift `n` bits of `out` through the chain from Shift-xR, leaving in Exit1; returns TDO.
    fn shift(c: &mut JtagChain, out: u64, n: u32) -> u64 {
        let mut got = 0;
        for i in 0..n {
            if c.tdo() {
                got |= 1 << i;
            }
            c.clock(i == n - 1, out >> i & 1 != 0);
        }
        got
    }

    #[test]
    fn idcodes_after_reset_dp_first_out() {
        let mut c = chain();
        for _ in 0..5 {
            c.clock(true, false);
        }
        for tms in [false, true, false, false] {
            c.clock(tms, false);
        }
        assert_eq!(c.state, TapState::ShiftDr);
        let got = shift(&mut c, u64::MAX, 64);
        assert_eq!(got & 0xFFFF_FFFF, 0x3BA0_0477, "the JTAG-DP is nearest TDO");
        assert_eq!(got >> 32, 0x0641_0041);
    }

    #[test]
    fn dpacc_read_of_ctrl_stat_through_the_pipeline() {
        let mut c = chain();
        c.clock(true, false);
        for tms in [false, true, true, false, false] {
            c.clock(tms, false);
        }
        assert_eq!(c.state, TapState::ShiftIr);
        // DP TAP is shifted first (nearest TDO): 9 bits = BYPASS for BS (upper 5) | DPACC.
        let captured = shift(&mut c, ir::BS_BYPASS << 4 | ir::DPACC, 9);
        assert_eq!(captured & 0x3, 0x1);
        c.clock(true, false); // Update-IR
        let dr = |c: &mut JtagChain, bits: u64| {
            for tms in [true, false, false] {
                c.clock(tms, false);
            }
            // 35 bits for the DP plus 1 bypass bit.
            let got = shift(c, bits, 36);
            c.clock(true, false); // Update-DR
            got
        };
        // Write CTRL/STAT power-up requests (RnW=0, A=01).
        let w = (0x5000_0000u64 << 3) | (1 << 1);
        dr(&mut c, w);
        let r = (1 << 1) | 1u64;
        dr(&mut c, r);
        let got = dr(&mut c, r);
        assert_eq!(got & 7, ACK_OK_FAULT);
        assert_eq!((got >> 3) as u32 & 0xF000_0000, 0xF000_0000, "both REQ and both ACK bits");
    }
}
