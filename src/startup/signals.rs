//! The signals that stop the server: SIGINT and SIGTERM (Ctrl-C elsewhere).

/// Installs the SIGINT (Ctrl-C) and SIGTERM handlers now, and returns what completes on
/// either. Installed before the server says it is listening: a handler installed only when
/// the future is first polled left a moment after "listening on" in which SIGTERM still had
/// its default effect, killing the process on the spot instead of draining it.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

/// Completes on Ctrl-C (there is no SIGTERM here).
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
