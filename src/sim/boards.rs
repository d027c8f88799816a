//! A rack of simulated boards that outlive their attempts: each unit's chip (flash, EEPROM,
//! fuses, lock byte) is kept in a directory, one file per unit serial, so a retest seats the
//! same chip again and a test can read every chip back after a run — the simulated
//! counterpart of the boxes of boards beside a real line. Station files turn it on with
//! `sim_boards: DIR`; without it every attempt gets a factory-fresh chip.
//!
//! Files are JSON (`<sha256 of the serial>.json`, the serial inside), written to a temporary
//! name and renamed, so two station processes sharing a rack never read half a board.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a chip holds between attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardState {
    /// Catalog id of the part on the board.
    pub part: String,
    /// Flash contents, hex.
    #[serde(with = "hex_bytes")]
    pub flash: Vec<u8>,
    /// EEPROM contents, hex.
    #[serde(with = "hex_bytes")]
    pub eeprom: Vec<u8>,
    /// Low, high, extended fuse bytes.
    pub fuses: [u8; 3],
    pub lock: u8,
}

/// A directory of boards.
#[derive(Debug, Clone)]
pub struct BoardRack {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct BoardFile {
    serial: String,
    board: BoardState,
}

impl BoardRack {
    /// Open (creating) the rack in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<BoardRack> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(BoardRack { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, serial: &str) -> PathBuf {
        let h = Sha256::digest(serial.as_bytes());
        self.dir.join(format!("{}.json", hex::encode(&h[..16])))
    }

    /// The board with this serial, if it was seated before.
    pub fn load(&self, serial: &str) -> io::Result<Option<BoardState>> {
        match std::fs::read(self.path(serial)) {
            Ok(bytes) => {
                let f: BoardFile = serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Ok((f.serial == serial).then_some(f.board))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Put the board back on the rack.
    pub fn save(&self, serial: &str, board: &BoardState) -> io::Result<()> {
        let path = self.path(serial);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let body = serde_json::to_vec(&BoardFile { serial: serial.to_string(), board: board.clone() }).map_err(io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)
    }

    /// Every board on the rack, with its serial.
    pub fn boards(&self) -> io::Result<Vec<(String, BoardState)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let f: BoardFile = serde_json::from_slice(&std::fs::read(&p)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            out.push((f.serial, f.board));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_round_trip_and_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let rack = BoardRack::open(dir.path()).unwrap();
        let a = BoardState { part: "atmega32u4".into(), flash: vec![1, 2, 3], eeprom: vec![0xFF; 4], fuses: [0x5E, 0xD9, 0xF3], lock: 0x3C };
        assert_eq!(rack.load("PL4-1").unwrap(), None);
        rack.save("PL4-1", &a).unwrap();
        let mut b = a.clone();
        b.eeprom[0] = 7;
        rack.save("PL4-2", &b).unwrap();
        assert_eq!(rack.load("PL4-1").unwrap(), Some(a.clone()));
        assert_eq!(rack.boards().unwrap(), vec![("PL4-1".to_string(), a), ("PL4-2".to_string(), b)]);
    }
}
