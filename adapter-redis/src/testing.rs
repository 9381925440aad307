//! Throwaway `redis-server` processes for tests: each on its own free port on
//! the loopback interface, with persistence off, killed when dropped.
//!
//! Used by this crate's tests and by the gateway's cluster tests. It needs the
//! `redis-server` binary on `PATH` (the `REDIS_SERVER` environment variable
//! may name another one).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a spawned server may take to answer its first PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A `redis-server` child process listening on `127.0.0.1:port`.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Spawns a server on a free port and waits until it answers PING.
    pub fn start() -> std::io::Result<Self> {
        Self::start_on(free_port()?)
    }

    /// Spawns a server on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let mut server = Self { port, child: None };
        server.spawn()?;
        Ok(server)
    }

    /// The URL to give [`crate::RedisConfig::urls`].
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (no chance to save or say goodbye) and
    /// reaps it. Its data is gone: persistence is off.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port (after [`Self::kill`]).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Freezes the server with SIGSTOP: its sockets stay open but nothing is
    /// answered, like a server stuck in a long command or a dead host.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws a server frozen by [`Self::pause`] with SIGCONT.
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal("-CONT")
    }

    /// Sends one command (inline protocol, space-separated words) and returns
    /// the raw reply. Enough for `INFO cpu`, `DBSIZE`, `FLUSHALL`.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        // A bulk reply announces its length; read until we hold all of it.
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply_complete(&reply) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    fn signal(&self, which: &str) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("redis-server is not running"))?;
        let status = Command::new("kill")
            .arg(which)
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill {which} {pid} failed")))
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run {binary}: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if self.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(std::io::Error::other(format!(
                    "redis-server on port {} did not answer PING",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server would not die from SIGKILL until continued on some
        // systems' accounting; continue it first to be sure it is reaped.
        let _ = self.resume();
        self.kill();
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn reply_complete(reply: &[u8]) -> bool {
    match reply.first() {
        Some(b'$') => {
            let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
                return false;
            };
            let len: i64 = std::str::from_utf8(&reply[1..end])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            len < 0 || reply.len() >= end + 2 + len as usize + 2
        }
        Some(_) => reply.ends_with(b"\r\n"),
        None => false,
    }
}
