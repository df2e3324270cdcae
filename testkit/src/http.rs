//! A tiny HTTP/1.1 server on 127.0.0.1 for tests of health pings: it records every request
//! (method, path with query, body) and answers as told, or never answers at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Every request gets this status.
    Status(u16),
    /// The first `n` requests get status 500, the later ones 200.
    FailFirst(usize),
    /// Requests are read and recorded, and never answered (the connection stays open until
    /// the server is dropped).
    Never,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query, e.g. `/ping/abc/start?x=1`.
    pub path: String,
    /// The body, as text (lossy).
    pub body: String,
    /// When the request was read completely.
    pub at: Instant,
}

/// A recording HTTP server on 127.0.0.1 (a free port), stopped when dropped.
pub struct HttpServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts a server that answers as `answer` says.
    pub fn start(answer: Answer) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (r, s) = (requests.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, s, served) = (r.clone(), s.clone(), served.clone());
                std::thread::spawn(move || serve(conn, answer, &r, &s, &served));
            }
        });
        HttpServer {
            addr,
            requests,
            stop,
            accept: Some(accept),
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests recorded so far, in the order they were read.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits up to `limit` until `n` requests were recorded; returns them all.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Request> {
        let until = Instant::now() + limit;
        while self.requests.lock().unwrap().len() < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.requests()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A URL on 127.0.0.1 where nothing listens (connections are refused).
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn serve(
    conn: TcpStream,
    answer: Answer,
    requests: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
    served: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        requests.lock().unwrap().push(request);
        let n = served.fetch_add(1, Ordering::SeqCst);
        let status = match answer {
            Answer::Status(s) => s,
            Answer::FailFirst(k) if n < k => 500,
            Answer::FailFirst(_) => 200,
            Answer::Never => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = conn.shutdown(Shutdown::Both);
                return;
            }
        };
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nOK"
        );
        if (&conn).write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one request; `None` when the client closed the connection (a client going away ends
/// the thread serving it).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim().is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let mut lines = head.lines();
    let first = lines.next()?.to_owned();
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}
