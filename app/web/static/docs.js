// Starts Swagger UI on /docs (a file: the pages' CSP allows no inline script).
"use strict";
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({url: root.dataset.specUrl, dom_id: "#swagger-ui"});
