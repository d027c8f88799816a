//! The simulated STM32F103 programmed by the real OpenOCD (Debian's 0.12, `openocd` package)
//! over its `remote_bitbang` JTAG driver, with the stock `target/stm32f1x.cfg` and no RAM
//! work area (`set WORKAREASIZE 0`): flashing goes through OpenOCD's half-word fallback.
//! Every OpenOCD run and the emulator are bounded in time.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// OpenOCD runs one at a time: they would otherwise fight over their default server ports.
static OPENOCD: Mutex<()> = Mutex::new(());

const IMAGE: &str = "generic_boot20_pc13.bin";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(IMAGE)
}

/// A `flashline sim serve --protocol jtag-bitbang` child; killed when dropped.
struct Emulator {
    child: Child,
    port: u16,
}

impl Emulator {
    /// SIGTERM the emulator and return what it printed on stderr (its closing statistics).
    fn stop(mut self) -> String {
        use std::io::Read;
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = std::time::Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "the emulator did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        err
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn emulator(extra: &[&str]) -> Emulator {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashline"))
        .args(["sim", "serve", "--protocol", "jtag-bitbang", "--mcu"])
        .args(if extra.contains(&"--cb") { ["stm32f103cb"] } else { ["stm32f103c8"] })
        .args(extra.iter().filter(|a| **a != "--cb"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flashline sim serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("the emulator printed no address within 20 s");
        }
    };
    let line = line.trim().to_string();
    let port = line
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("first stdout line should be 127.0.0.1:PORT, got {line:?}"));
    Emulator { child, port }
}

/// Run OpenOCD on the emulator with the contract's set-up and then `cmds`; (exit ok, output).
fn openocd(emu: &Emulator, cmds: &[&str]) -> (bool, String) {
    let _one = OPENOCD.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Command::new("openocd");
    c.current_dir(fixture().parent().unwrap());
    for a in [
        "gdb_port disabled",
        "tcl_port disabled",
        "telnet_port disabled",
        "adapter driver remote_bitbang",
        "remote_bitbang host 127.0.0.1",
        &format!("remote_bitbang port {}", emu.port),
        "transport select jtag",
        "set WORKAREASIZE 0",
    ] {
        c.arg("-c").arg(a);
    }
    c.arg("-f").arg("target/stm32f1x.cfg");
    for a in cmds {
        c.arg("-c").arg(a);
    }
    support::run_joined(&mut c, Duration::from_secs(180))
}

fn write_and_verify() -> [&'static str; 4] {
    ["init", "reset halt", "flash write_image erase generic_boot20_pc13.bin 0x08000000", "verify_image generic_boot20_pc13.bin 0x08000000"]
}

#[test]
fn contract_write_image_erase_and_verify_exit_0_and_dump_matches() {
    let emu = emulator(&[]);
    // The command line exactly as written (default server ports included).
    let _one = OPENOCD.lock().unwrap_or_else(|p| p.into_inner());
    let port = format!("remote_bitbang port {}", emu.port);
    let mut c = Command::new("openocd");
    c.current_dir(fixture().parent().unwrap());
    for a in ["adapter driver remote_bitbang", "remote_bitbang host 127.0.0.1", &port, "transport select jtag", "set WORKAREASIZE 0"] {
        c.arg("-c").arg(a);
    }
    c.arg("-f").arg("target/stm32f1x.cfg");
    for a in write_and_verify().iter().chain(&["shutdown"]) {
        c.arg("-c").arg(a);
    }
    let (ok, out) = support::run_joined(&mut c, Duration::from_secs(180));
    drop(_one);
    assert!(ok, "openocd failed:\n{out}");
    assert!(out.contains("tap/device found: 0x3ba00477"), "{out}");
    assert!(out.contains("tap/device found: 0x06410041"), "{out}");
    assert!(out.contains("Cortex-M3 r1p1 processor detected"), "{out}");
    assert!(out.contains("falling back to single memory accesses"), "the half-word path was used:\n{out}");
    assert!(out.contains("wrote 7172 bytes"), "{out}");
    assert!(out.contains("verified 7172 bytes"), "{out}");

    // A second session on the same board: reset runs the bootloader's vector table, and
    // dump_image reads back exactly the file.
    let dump = tempfile::NamedTempFile::new().unwrap();
    let dump_cmd = format!("dump_image {} 0x08000000 7172", dump.path().display());
    let (ok, out) = openocd(&emu, &["init", "reset halt", &dump_cmd, "shutdown"]);
    assert!(ok, "{out}");
    assert!(out.contains("pc: 0x080000f0 msp: 0x20002800"), "reset fetched SP and PC from the image:\n{out}");
    assert_eq!(std::fs::read(dump.path()).unwrap(), std::fs::read(fixture()).unwrap(), "dump_image equals the image");

    // What the board saw: 7172 bytes as 3586 half-word programs, pages 0-7 erased one by one.
    let err = emu.stop();
    assert!(err.contains("2 sessions"), "{err}");
    assert!(err.contains("3586 half-words programmed, 8 page erases, 0 mass erases"), "{err}");
    assert!(err.contains("(0 errors)"), "{err}");
}

#[test]
fn flash_info_and_options_read_answer_as_on_silicon() {
    let emu = emulator(&[]);
    let (ok, out) = openocd(&emu, &["init", "reset halt", "flash info 0", "stm32f1x options_read 0", "shutdown"]);
    assert!(ok, "{out}");
    assert!(out.contains("device id = 0x20030410"), "{out}");
    assert!(out.contains("flash size = 64 KiB"), "{out}");
    assert!(out.contains("#0 : stm32f1x at 0x08000000, size 0x00010000"), "{out}");
    // Medium density: one write-protection bit per four 1 KiB pages.
    assert!(out.contains("# 15: 0x0000f000 (0x1000 4kB) not protected"), "{out}");
    assert!(!out.contains("# 16:"), "{out}");
    assert!(out.contains("STM32F10x (Medium Density) - Rev: Y"), "{out}");
    for line in [
        "option byte register = 0x3fffffc",
        "write protection register = 0xffffffff",
        "read protection: off",
        "watchdog: software",
        "stop mode: no reset generated upon entry",
        "standby mode: no reset generated upon entry",
        "user data = 0xffff",
    ] {
        assert!(out.contains(line), "missing {line:?}:\n{out}");
    }
    assert!(!out.contains("option byte complement error"), "{out}");

    let cb = emulator(&["--cb"]);
    let (ok, out) = openocd(&cb, &["init", "reset halt", "flash info 0", "shutdown"]);
    assert!(ok, "{out}");
    assert!(out.contains("flash size = 128 KiB") && out.contains("size 0x00020000"), "{out}");
    assert!(out.contains("# 31: 0x0001f000"), "{out}");
}

#[test]
fn lock_refuses_reads_after_reset_and_unlock_mass_erases() {
    let emu = emulator(&[]);
    let mut cmds = write_and_verify().to_vec();
    cmds.extend(["stm32f1x lock 0", "shutdown"]);
    let (ok, out) = openocd(&emu, &cmds);
    assert!(ok, "{out}");
    assert!(out.contains("stm32x locked"), "{out}");

    // Protection takes effect at reset: the option bytes say so and debug reads of flash fail.
    let (ok, out) = openocd(&emu, &["init", "reset halt", "stm32f1x options_read 0", "mdw 0x08000000 4", "shutdown"]);
    assert!(out.contains("read protection: on"), "{out}");
    assert!(out.contains("option byte register = 0x3fffffe"), "{out}");
    assert!(!ok, "a read of protected flash must fail:\n{out}");
    assert!(out.contains("Failed to read memory at 0x080000"), "{out}");
    assert!(!out.contains("0x08000000: 20002800"), "{out}");

    // Unlock: the option-byte rewrite forces a mass erase; after reset flash reads erased.
    let (ok, out) = openocd(&emu, &["init", "reset halt", "stm32f1x unlock 0", "shutdown"]);
    assert!(ok && out.contains("stm32x unlocked"), "{out}");
    let dump = tempfile::NamedTempFile::new().unwrap();
    let dump_cmd = format!("dump_image {} 0x08000000 0x10000", dump.path().display());
    let (ok, out) = openocd(&emu, &["init", "reset halt", "stm32f1x options_read 0", &dump_cmd, "shutdown"]);
    assert!(ok, "{out}");
    assert!(out.contains("read protection: off"), "{out}");
    let bytes = std::fs::read(dump.path()).unwrap();
    assert_eq!(bytes.len(), 0x10000);
    assert!(bytes.iter().all(|&b| b == 0xFF), "unlock left flash erased");
}

#[test]
fn no_target_fails_with_a_clear_scan_chain_error() {
    let emu = emulator(&["--fault", "no-target"]);
    let mut cmds = write_and_verify().to_vec();
    cmds.push("shutdown");
    let (ok, out) = openocd(&emu, &cmds);
    assert!(!ok, "{out}");
    assert!(out.contains("JTAG scan chain interrogation failed: all ones"), "{out}");
    assert!(!out.contains("verified"), "{out}");
}

#[test]
fn clone_drops_writes_and_verify_catches_it() {
    let emu = emulator(&["--fault", "clone"]);
    let mut cmds = write_and_verify().to_vec();
    cmds.push("shutdown");
    let (ok, out) = openocd(&emu, &cmds);
    assert!(out.contains("wrote 7172 bytes"), "the clone reports no error while writing:\n{out}");
    assert!(!ok, "{out}");
    assert!(out.contains("checksum mismatch") || out.contains("diff "), "{out}");
    assert!(!out.contains("verified 7172 bytes"), "{out}");
}

#[test]
fn readout_protected_board_refuses_reads_until_unlocked() {
    let emu = emulator(&["--fault", "readout-protected"]);
    let (ok, out) = openocd(&emu, &["init", "reset halt", "stm32f1x options_read 0", "mdw 0x08000000 1", "shutdown"]);
    assert!(out.contains("read protection: on"), "{out}");
    assert!(!ok && out.contains("Failed to read memory"), "{out}");
    // Unlock mass-erases the old firmware; then the real image goes on and verifies.
    let (ok, out) = openocd(&emu, &["init", "reset halt", "stm32f1x unlock 0", "reset halt", "mdw 0x08000000 2", "shutdown"]);
    assert!(ok, "{out}");
    assert!(out.contains("0x08000000: ffffffff ffffffff"), "{out}");
    let mut cmds = write_and_verify().to_vec();
    cmds.push("shutdown");
    let (ok, out) = openocd(&emu, &cmds);
    assert!(ok && out.contains("verified 7172 bytes"), "{out}");
}

#[test]
fn stuck_bit_fails_the_write_with_not_erased() {
    let emu = emulator(&["--fault", "stuck:0x08000100"]);
    let mut cmds = write_and_verify().to_vec();
    cmds.push("shutdown");
    let (ok, out) = openocd(&emu, &cmds);
    assert!(!ok, "{out}");
    assert!(out.contains("flash not erased"), "the FPEC's PGERR reaches OpenOCD:\n{out}");
}

#[test]
fn timed_mode_stalls_and_waits_but_still_programs() {
    // Datasheet delays on: OpenOCD sees BSY and polls; the result is the same image.
    let emu = emulator(&["--timing"]);
    let dump = tempfile::NamedTempFile::new().unwrap();
    let dump_cmd = format!("dump_image {} 0x08000000 7172", dump.path().display());
    let mut cmds = write_and_verify().to_vec();
    cmds.extend([dump_cmd.as_str(), "shutdown"]);
    let (ok, out) = openocd(&emu, &cmds);
    assert!(ok && out.contains("verified 7172 bytes"), "{out}");
    assert_eq!(std::fs::read(dump.path()).unwrap(), std::fs::read(fixture()).unwrap());
}

#[test]
fn bad_arguments_are_refused_clearly() {
    for (args, want) in [
        (vec!["--mcu", "atmega32u4"], "known STM32 parts are stm32f103c8, stm32f103cb"),
        (vec!["--mcu", "stm32f103c8", "--fault", "flaky"], "unknown STM32 fault"),
        (vec!["--mcu", "stm32f103c8", "--listen", "nowhere"], "expected IP:PORT"),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flashline"));
        c.args(["sim", "serve", "--protocol", "jtag-bitbang"]).args(&args);
        let (ok, out) = support::run_joined(&mut c, Duration::from_secs(20));
        assert!(!ok, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: {out}");
    }
}
