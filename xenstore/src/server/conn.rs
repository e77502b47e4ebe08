//! One client connection: a reader thread that frames requests and hands them to
//! the state, and a writer thread that drains the connection's bounded output
//! queue. A client that stops reading only fills its own queue (and is then
//! disconnected); a client that sends half a message only stalls its own reader.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;

use super::errno::Errno;
use super::state::{ConnId, State};
use super::Shared;
use crate::wire::{read_message, Message, ReadError};

/// How long one reply may wait for a client to make room in its socket before
/// the client is considered stuck and disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the two threads of a new connection.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    id: ConnId,
    stream: UnixStream,
) -> std::io::Result<[JoinHandle<()>; 2]> {
    let (out_tx, out_rx) = bounded::<Vec<u8>>(shared.config.max_queued_messages);
    let mut write_half = stream.try_clone()?;
    write_half.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let kill_handle = stream.try_clone()?;
    shared.lock().add_conn(id, out_tx, kill_handle);

    let writer = std::thread::Builder::new()
        .name(format!("xs-conn{id}-tx"))
        .spawn(move || {
            for bytes in out_rx.iter() {
                if write_half.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = write_half.shutdown(std::net::Shutdown::Both);
        });
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            shared.lock().remove_conn(id);
            return Err(e);
        }
    };
    let reader_shared = Arc::clone(shared);
    let reader = std::thread::Builder::new()
        .name(format!("xs-conn{id}-rx"))
        .spawn(move || read_loop(&reader_shared, id, stream));
    match reader {
        Ok(r) => Ok([r, writer]),
        Err(e) => {
            shared.lock().remove_conn(id);
            Err(e)
        }
    }
}

fn read_loop(shared: &Shared, id: ConnId, mut stream: UnixStream) {
    loop {
        let read = read_message(&mut stream);
        if !on_read(&mut shared.lock(), id, read) {
            break;
        }
    }
    // Dropping the state's queue sender lets the writer flush what is queued
    // (such as the error above) and exit.
    let mut state = shared.lock();
    state.remove_conn_after_flush(id);
}

/// What the reader does with one framing result: a request is handled, a
/// framing error answered. Returns whether to go on reading (false: hang up).
pub(crate) fn on_read(state: &mut State, id: ConnId, read: Result<Message, ReadError>) -> bool {
    match read {
        Ok(msg) => state.handle(id, &msg),
        Err(ReadError::UnknownType {
            msg_type,
            req_id,
            tx_id,
        }) => {
            tracing::debug!(conn = id, msg_type, "xenstore request of unknown type");
            state.reply_error(id, req_id, tx_id, Errno::Invalid.name());
        }
        Err(ReadError::Oversized { req_id, tx_id, len }) => {
            // The stream cannot be resynchronised: answer, then hang up.
            tracing::debug!(conn = id, len, "oversized xenstore request; disconnecting");
            state.reply_error(id, req_id, tx_id, Errno::Invalid.name());
            return false;
        }
        Err(ReadError::Io(_)) => return false,
    }
    true
}
