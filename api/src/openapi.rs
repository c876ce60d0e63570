//! The OpenAPI 3.1 document served at `/openapi.json` (written by hand: the API is small).
use serde_json::{json, Value};

pub fn document() -> Value {
    let id_param = |what: &str| {
        json!([{ "name": "id", "in": "path", "required": true, "description": format!("{what} id"),
                 "schema": { "type": "integer", "format": "int64" } }])
    };
    let version_param = json!({ "name": "model_version", "in": "query", "required": false,
        "description": "only this model version", "schema": { "type": "string" } });
    let err = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
      "openapi": "3.1.0",
      "info": { "title": "hashtale", "version": env!("CARGO_PKG_VERSION"),
                "description": "Hashtags and short stories for images." },
      "components": {
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        "schemas": {
          "Error": { "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] },
          "NewPost": { "type": "object", "properties": {
              "source": { "type": "string", "maxLength": 200 },
              "external_id": { "type": "string", "maxLength": 500 },
              "image_url": { "type": "string", "format": "uri" },
              "image_base64": { "type": "string", "contentEncoding": "base64" },
              "caption": { "type": "string" } } },
          "Accepted": { "type": "object", "properties": {
              "post_id": { "type": "integer" }, "job_id": { "type": "integer" }, "new": { "type": "boolean" },
              "queued": { "type": "boolean", "description": "the job is with the queue; false: the broker is away, the post is stored and its job is queued once the broker is back" } } },
          "Job": { "type": "object", "properties": {
              "id": { "type": "integer" }, "post_id": { "type": "integer" },
              "state": { "type": "string", "enum": ["pending", "queued", "running", "retrying", "done", "failed"] },
              "attempts": { "type": "integer" }, "last_error": { "type": ["string", "null"] },
              "created_at": { "type": "integer", "description": "ms since the Unix epoch" },
              "updated_at": { "type": "integer" }, "started_at": { "type": ["integer", "null"] },
              "finished_at": { "type": ["integer", "null"] } } },
          "Result": { "type": "object", "properties": {
              "id": { "type": "integer" }, "post_id": { "type": "integer" }, "job_id": { "type": ["integer", "null"] },
              "model_version": { "type": "string" },
              "output": { "type": "object", "description": "hashtags (tag, score, 49 attention weights), story, …" },
              "story": { "type": ["string", "null"] }, "timings": { "type": "object" },
              "created_at": { "type": "integer" } } }
        }
      },
      "paths": {
        "/v1/posts": { "post": {
            "summary": "Submit an image (URL, base64 or multipart upload); returns its job.",
            "security": [{ "bearer": [] }],
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": { "$ref": "#/components/schemas/NewPost" } },
                "multipart/form-data": { "schema": { "type": "object", "properties": {
                    "file": { "type": "string", "format": "binary" }, "image_url": { "type": "string" },
                    "source": { "type": "string" }, "external_id": { "type": "string" }, "caption": { "type": "string" } } } } } },
            "responses": {
              "202": { "description": "new post stored; its job is queued (`queued: true`) or will be once the broker is back (`queued: false`)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } } },
              "200": { "description": "post already known", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } } },
              "400": err, "401": err, "403": err, "413": { "description": "too large" }, "415": err,
              "503": { "description": "the database is unavailable; try again (a retry of a post that did get stored answers 200)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } } } } },
        "/v1/posts/{id}": { "get": { "summary": "A post with its job and results.", "parameters": id_param("post"),
            "responses": { "200": { "description": "the post" }, "404": err } } },
        "/v1/jobs/{id}": { "get": { "summary": "A job's state, attempts and last error.", "parameters": id_param("job"),
            "responses": { "200": { "description": "the job", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } }, "404": err } } },
        "/v1/results": { "get": { "summary": "Results, oldest first, paged by id.",
            "parameters": [
              { "name": "since", "in": "query", "schema": { "type": "integer" }, "description": "created at or after (ms since epoch)" },
              { "name": "after", "in": "query", "schema": { "type": "integer" }, "description": "id cursor: next_after of the previous page" },
              { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }],
            "responses": { "200": { "description": "a page", "content": { "application/json": { "schema": { "type": "object", "properties": {
                "results": { "type": "array", "items": { "$ref": "#/components/schemas/Result" } },
                "next_after": { "type": ["integer", "null"] } } } } } } } } },
        "/healthz": { "get": { "summary": "Liveness.", "responses": { "200": { "description": "ok" } } } },
        "/readyz": { "get": { "summary": "Database and broker reachable (503 while either is away, e.g. during a broker restart).", "responses": { "200": { "description": "ready" }, "503": { "description": "not ready" } } } },
        "/metrics": { "get": { "summary": "Prometheus metrics.", "responses": { "200": { "description": "text exposition format" } } } },
        "/openapi.json": { "get": { "summary": "This document.", "responses": { "200": { "description": "OpenAPI 3.1" } } } },
        "/admin/ratings/report.json": { "get": { "summary": "Human-rating report per model version (see docs/ratings.md).",
            "security": [{ "bearer": [] }], "parameters": [version_param.clone()],
            "responses": { "200": { "description": "the report" }, "401": { "description": "no or wrong admin token" }, "403": { "description": "admin disabled" } } } },
        "/admin/ratings/export.csv": { "get": { "summary": "Every rating answer as CSV.", "security": [{ "bearer": [] }],
            "parameters": [version_param.clone()], "responses": { "200": { "description": "text/csv" }, "401": { "description": "no or wrong admin token" } } } },
        "/admin/ratings/export.jsonl": { "get": { "summary": "Every rating answer as JSON Lines.", "security": [{ "bearer": [] }],
            "parameters": [version_param], "responses": { "200": { "description": "application/jsonl" }, "401": { "description": "no or wrong admin token" } } } }
      }
    })
}
