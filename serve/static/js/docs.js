// The API reference: Swagger UI from this server's own files, reading /openapi.json with the studio's token.
const token = sessionStorage.getItem("tav.token");
const withToken = (request) => {
  if (token) request.headers.Authorization = `Bearer ${token}`;
  return request;
};
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  requestInterceptor: withToken,
  onComplete: () => {},
});
if (!token) {
  document.getElementById("docs-error").textContent =
    "No token in this tab: open the studio (/) and enter it first if the service needs one.";
}
