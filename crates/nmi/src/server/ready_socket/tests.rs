use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn ask_async(path: &Path) -> Verdict {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || ask(&path, TIMEOUT))
        .await
        .unwrap()
}

/// Serves `path` with the readiness in `ready` until the returned sender is dropped or sent to.
fn start(
    path: &Path,
    ready: Arc<AtomicBool>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        path.to_owned(),
        move || ready.load(Ordering::Acquire),
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, task)
}

async fn until_bound(path: &Path) {
    for _ in 0..500 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} was never bound", path.display());
}

#[tokio::test]
async fn a_probe_before_this_nmi_created_its_socket_fails() {
    let dir = tempfile::tempdir().unwrap();
    let verdict = ask_async(&dir.path().join("ready.sock")).await;
    assert!(
        matches!(&verdict, Verdict::NotReady(why) if why.starts_with("no answer on")),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn the_socket_answers_this_processs_readiness_as_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.sock");
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, task) = start(&path, ready.clone());
    until_bound(&path).await;

    assert!(matches!(ask_async(&path).await, Verdict::NotReady(why) if why.starts_with("not ready")));
    ready.store(true, Ordering::Release);
    assert_eq!(ask_async(&path).await, Verdict::Ready);
    ready.store(false, Ordering::Release);
    assert!(matches!(ask_async(&path).await, Verdict::NotReady(_)));

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(!path.exists(), "a stopped NMI takes its socket away");
    assert!(matches!(ask_async(&path).await, Verdict::NotReady(_)));
}

#[tokio::test]
async fn a_restarted_container_replaces_its_predecessors_socket_but_not_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.sock");
    // What a killed NMI leaves in the pod's emptyDir: a socket nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (stop, task) = start(&path, Arc::new(AtomicBool::new(true)));
    let mut verdict = ask_async(&path).await;
    for _ in 0..500 {
        if verdict == Verdict::Ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        verdict = ask_async(&path).await;
    }
    assert_eq!(verdict, Verdict::Ready);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let (_stop, task) = start(&file, Arc::new(AtomicBool::new(true)));
    let err = task.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn an_answer_is_read_only_up_to_its_bound_and_shown_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        // Not an NMI: a long answer with control characters.
        let _ = s.write_all(format!("ready\r\n{}\x1b[2J", "x".repeat(10_000)).as_bytes());
    });
    let verdict = ask(&path, TIMEOUT);
    server.join().unwrap();
    match verdict {
        Verdict::NotReady(why) => {
            assert!(why.len() <= MAX_ANSWER as usize, "{}", why.len());
            assert!(!why.chars().any(char::is_control), "{why:?}");
        }
        Verdict::Ready => panic!("only the exact line is ready"),
    }
}

#[tokio::test]
async fn a_socket_another_nmi_answers_on_is_neither_taken_over_nor_removed() {
    // Two NMIs pointed at one directory (a hostPath instead of each pod's emptyDir): the second
    // refuses to start its socket, and the first keeps answering its own pod's probes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.sock");
    let (stop, task) = start(&path, Arc::new(AtomicBool::new(true)));
    until_bound(&path).await;
    let (_stop2, second) = start(&path, Arc::new(AtomicBool::new(false)));
    let err = second.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("another process answers on it"), "{err}");
    assert_eq!(ask_async(&path).await, Verdict::Ready);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
