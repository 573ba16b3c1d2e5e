//! The module of the `modhost up --watch` test: it answers with the text of
//! `reply.txt`, a file the test writes (and rewrites, to make a new version) before
//! `up` builds the crate. The file is not in the repository.

fn handle(_request: modhost_guest::Request) -> modhost_guest::Response {
    modhost_guest::Response::text(200, include_str!("../reply.txt").trim())
}

modhost_guest::http_module!(handle);
