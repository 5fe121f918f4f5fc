//! The OpenAPI 3.1 document of the caller and admin APIs, generated from the
//! handlers' annotations and the wire types. Served at `/openapi.json` on the
//! admin port; checked in as `deploy/openapi.json` (a test keeps it fresh).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorJson;
use super::routes::status::{CredentialState, JwksState, Status, StoreState, TenantsState};
use super::routes::{admin, jobs, status, stop, stops};
use crate::stop::merge::JobEntry;
use crate::stop::plan::StopRequest;
use crate::stop::response::StopResponse;
use crate::tenants::{ProjectSpec, TenantSpec, TenantsFile};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cph-gateway",
        description = "Stops Huawei Cloud Phones (CPH) in batches for internal services. The caller API listens on server.listen; the admin API, health and metrics on server.admin_listen.",
        license(name = "Apache-2.0")
    ),
    paths(
        stop::stop_default,
        stop::stop_in_project,
        stops::stop_record,
        jobs::job_default,
        jobs::job_in_project,
        admin::list,
        admin::get,
        admin::put,
        admin::delete,
        admin::reload,
        admin::audit,
        status::status,
    ),
    components(schemas(StopRequest, StopResponse, JobEntry, ErrorJson, TenantSpec, ProjectSpec, TenantsFile, Status, TenantsState, StoreState, JwksState, CredentialState)),
    modifiers(&BearerJwt),
    security(("bearer_jwt" = [])),
    tags(
        (name = "caller", description = "Stop phones and follow their jobs (caller port)"),
        (name = "admin", description = "Tenant-to-project mappings (admin port; admin role required)")
    )
)]
pub struct ApiDoc;

struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_jwt",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON (what `/openapi.json` serves).
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}
