-- wrk script: POST /oidc/register with a ~560-byte MCP-style RFC 7591 registration.
-- The body is bench/body.json (run.sh checks they are identical and that the body passes
-- the gateway's strict validation: `dcr-gateway validate bench/body.json`).
-- Usage: wrk -s bench/post.lua http://127.0.0.1:PORT/oidc/register
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "mcp-bench/1.0"
wrk.body = [[{"client_name":"Sample Desktop MCP Connector (bench)","redirect_uris":["http://127.0.0.1:33418/oauth/callback","https://agent.example.com/mcp/oauth/callback"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none","scope":"openid profile email offline_access","client_uri":"https://agent.example.com","logo_uri":"https://agent.example.com/static/logo-256.png","contacts":["security@agent.example.com","ops@agent.example.com"],"software_id":"4f9c1e2a-7b3d-4c8e-9a1f-2d6e8b0c5a71","software_version":"1.4.2"}]]
