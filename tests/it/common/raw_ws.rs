//! A WebSocket client that writes frames byte by byte, so tests can send
//! what no well-behaved library sends: unmasked frames, reserved bits and
//! opcodes, fragmented or oversized control frames, bad continuations, text
//! that is not UTF-8. It reads the server's answer as raw frames too.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

pub struct RawWs {
    tcp: TcpStream,
    buffered: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A client frame: `fin`, the three reserved bits, the opcode, masked or
/// not (RFC 6455 says clients must mask).
pub fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 0b111) << 4) | (opcode & 0x0f)];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A well-formed masked text frame.
pub fn text(payload: &[u8]) -> Vec<u8> {
    frame(true, 0, 0x1, true, payload)
}

/// The HTTP request that upgrades a connection to `/v1/ws`, with a bearer
/// token if given.
pub fn upgrade_request(addr: SocketAddr, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    )
}

impl RawWs {
    /// Upgrades a fresh connection to `/v1/ws`, with a bearer token if given.
    pub async fn connect(addr: SocketAddr, token: Option<&str>) -> RawWs {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(upgrade_request(addr, token).as_bytes())
            .await
            .unwrap();
        let mut ws = RawWs {
            tcp,
            buffered: Vec::new(),
        };
        let head = ws.read_until_blank_line().await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(WAIT, self.tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("the server said nothing within {WAIT:?}"),
        }
    }

    async fn read_until_blank_line(&mut self) -> String {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffered.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            assert!(self.fill().await, "connection closed during the handshake");
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        // The server may close while we write a large frame: that is an
        // answer, read next.
        let _ = self.tcp.write_all(bytes).await;
    }

    /// The next frame from the server, `None` once the connection ended.
    pub async fn read(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse(&self.buffered) {
                self.buffered.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads until the server's close frame; its code (None: the connection
    /// ended without one).
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some(frame) = self.read().await {
            if frame.opcode == 0x8 {
                let code = frame.payload.get(..2)?;
                return Some(u16::from_be_bytes([code[0], code[1]]));
            }
        }
        None
    }
}

/// An unmasked server frame at the start of `bytes`, and its length.
pub fn parse(bytes: &[u8]) -> Option<(RawFrame, usize)> {
    let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if b1 & 0x80 != 0 {
        at += 4; // a server never masks; tolerated anyway
    }
    let payload = bytes.get(at..at + len)?.to_vec();
    Some((
        RawFrame {
            opcode: b0 & 0x0f,
            payload,
        },
        at + len,
    ))
}
