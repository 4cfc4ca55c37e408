//! The Redis Cluster store over TLS only (`rediss+cluster://…?cacert=`),
//! against a local 3-master cluster whose client ports, cluster bus and
//! replication all speak TLS with certificates from a CA the test creates.

use super::*;

/// The whole conformance suite (records, user and IdP-session indexes,
/// refresh leases, replay guard; plain and behind the local cache) over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_runs_on_a_tls_cluster() {
    contract_suite(&LocalCluster::start_tls()).await;
}

/// A delete on one replica reaches the other's cache through pub/sub on a
/// seed node, over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_tls_cluster_see_each_others_delete() {
    replicas_see_each_others_delete(&LocalCluster::start_tls()).await;
}

/// The node at `port` answers a `GET key` it does not own with
/// `MOVED slot host:port`; this is that `host:port`.
fn moved_to(cluster: &LocalCluster, port: u16, key: &str) -> Option<String> {
    match cluster.query::<Option<String>>(port, redis::cmd("GET").arg(key)) {
        Err(e) if e.kind() == redis::ErrorKind::Moved => {
            e.redirect_node().map(|(node, _slot)| node.to_owned())
        }
        _ => None,
    }
}

/// How many `MOVED` replies the node at `port` has sent.
fn moved_replies(cluster: &LocalCluster, port: u16) -> u64 {
    let stats: String = cluster
        .query(port, redis::cmd("INFO").arg("errorstats"))
        .expect("INFO errorstats");
    stats
        .lines()
        .find_map(|line| line.strip_prefix("errorstat_MOVED:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The classic TLS cluster failure is a node announcing its plain port:
/// the client then follows a redirection to a port nobody listens on. With
/// one seed only, every other node is known from what the nodes announce,
/// and a slot moved after the client read the slot map makes its next
/// command to that slot a `MOVED` it must follow over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_redirections_reach_the_tls_ports() {
    let cluster = LocalCluster::start_tls();
    let seed = format!("127.0.0.1:{}", cluster.ports[0]);
    let store = store_at(&cluster.tls_url(&seed, &cluster.pki().ca), &fresh_prefix()).await;
    let (_, record) = sample_record("alice", Some("sid-moved"), SystemClock.now());
    let key = store.record_key(record.id.as_str());

    // Announced endpoints are the TLS ports: the non-owners redirect there.
    let owner = cluster
        .ports
        .iter()
        .copied()
        .find(|&port| moved_to(&cluster, port, &key).is_none())
        .expect("an owner of the record's slot");
    for &port in cluster.ports.iter().filter(|&&p| p != owner) {
        assert_eq!(
            moved_to(&cluster, port, &key),
            Some(format!("127.0.0.1:{owner}"))
        );
    }

    // Move the (empty) slot to another node, as a resharding does.
    let target = *cluster.ports.iter().find(|&&p| p != owner).expect("target");
    let id_of = |port: u16| -> String {
        cluster
            .query(port, redis::cmd("CLUSTER").arg("MYID"))
            .expect("CLUSTER MYID")
    };
    let (owner_id, target_id) = (id_of(owner), id_of(target));
    let slot: i64 = cluster
        .query(owner, redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key))
        .expect("slot");
    let setslot = |port: u16, how: &str, node: &str| {
        let (): () = cluster
            .query(
                port,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(how)
                    .arg(node),
            )
            .expect("CLUSTER SETSLOT");
    };
    setslot(target, "IMPORTING", &owner_id);
    setslot(owner, "MIGRATING", &target_id);
    for &port in &cluster.ports {
        setslot(port, "NODE", &target_id);
    }
    assert_eq!(
        moved_to(&cluster, owner, &key),
        Some(format!("127.0.0.1:{target}"))
    );

    // The store still holds the old slot map: its first write goes to the
    // old owner and must follow the MOVED to the new one over TLS.
    let moved_before = moved_replies(&cluster, owner);
    store.save(&record).await.expect("save through MOVED");
    assert!(
        moved_replies(&cluster, owner) > moved_before,
        "the store was not redirected"
    );
    let stored: i64 = cluster
        .query(target, redis::cmd("EXISTS").arg(&key))
        .expect("EXISTS");
    assert_eq!(stored, 1, "the record is not on the slot's new owner");
    assert_eq!(
        store.load(&record.id).await.expect("load"),
        Some(record.clone())
    );
    let lease = store
        .acquire_refresh_lease(&record.id, Duration::from_secs(30))
        .await
        .expect("lease")
        .expect("a free lease");
    store
        .release_refresh_lease(&record.id, &lease)
        .await
        .expect("release");
    assert_eq!(
        store.list_by_sub("alice").await.expect("list"),
        vec![record.clone()]
    );
    assert_eq!(store.delete_by_sid("sid-moved").await.expect("delete"), 1);
}

/// Refused at start, promptly, with an error that names the certificate
/// problem: nodes whose certificate does not chain to the configured CA (a
/// man in the middle); nodes only a private CA vouches for when no `cacert`
/// is set (the system roots are used then); and nodes whose certificate
/// names the seeds' host name but not the address the nodes announce, which
/// the client follows (without the start-up check the store came up and
/// failed every command with "No connections found").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_with_untrusted_node_certificates_is_refused_at_start() {
    let cluster = LocalCluster::start_tls_naming("DNS:localhost");
    let by_name: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("localhost:{p}"))
        .collect();
    let wrong_ca = cluster.tls_url(&by_name.join(","), &cluster.pki().other_ca);
    let no_ca = format!("rediss+cluster://{}", by_name.join(","));
    let announced_not_named = cluster.tls_url(&by_name.join(","), &cluster.pki().ca);
    let options = RedisOptions {
        key_prefix: fresh_prefix(),
        ..RedisOptions::default()
    };
    for url in [wrong_ca, no_ca, announced_not_named] {
        let started = Instant::now();
        let result =
            RedisClusterStore::connect(&url, options.clone(), PayloadCodec::sealed(ring())).await;
        match result {
            Err(StoreError::Unavailable(message)) => assert!(
                message.contains("certificate"),
                "{url}: the error does not name the TLS problem: {message}"
            ),
            other => panic!("{url}: accepted: {other:?}"),
        }
        // Refused on the handshake, not after waiting out the timeout.
        assert!(
            started.elapsed() < options.timeout,
            "{url}: refused only after {:?}",
            started.elapsed()
        );
    }
}
