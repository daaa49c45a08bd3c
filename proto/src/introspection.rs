//! gRPC health and server reflection for every clawswarm server, so
//! `grpcurl` can list, describe and call them.

/// Add gRPC health (`grpc.health.v1`) and server reflection (v1 and
/// v1alpha, so every grpcurl version works) to a server that exposes
/// `services` (fully qualified names); reflection lists exactly those.
pub async fn with_introspection<L>(
    router: tonic::transport::server::Router<L>,
    services: &[&'static str],
) -> Result<
    (
        tonic::transport::server::Router<L>,
        tonic_health::server::HealthReporter,
    ),
    tonic_reflection::server::Error,
> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in services {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in services {
            b = b.with_service_name(*name);
        }
        b.with_service_name("grpc.health.v1.Health")
    };
    let v1 = builder().build_v1()?;
    let v1alpha = builder().build_v1alpha()?;
    let router = router
        .add_service(health_service)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((router, health))
}
