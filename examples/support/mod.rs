//! What the benchmark's helper servers share.

/// Binds 127.0.0.1:0 and writes the address to `addr_file` (written whole, then renamed: a reader polling the file
/// never sees it half written).
pub async fn bind_and_announce(addr_file: &str) -> tokio::net::TcpListener {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the bound address");
    let tmp = format!("{addr_file}.tmp");
    std::fs::write(&tmp, addr.to_string()).expect("write the address file");
    std::fs::rename(&tmp, addr_file).expect("rename the address file");
    listener
}
