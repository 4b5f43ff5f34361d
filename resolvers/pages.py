"""The API's own pages, served with no network beyond this server: GraphiQL at /graphql,
Swagger UI at /docs and ReDoc at /redoc load their scripts and styles from
`static/vendor/` (static/vendor/README.md has the versions, sources and licences).

Each script and style is loaded with a subresource-integrity hash, so a browser refuses
a file that differs from the release it was taken from: GraphiQL's are Strawberry's own
(its page names unpkg; here the same paths are served by this server), Swagger UI's and
ReDoc's are below (tests/test_offline_pages.py checks them against the files).
"""

from __future__ import annotations

from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

VENDOR = "/static/vendor"
UNPKG = "https://unpkg.com/"

SWAGGER_JS = f"{VENDOR}/swagger-ui-dist@5.35.0/swagger-ui-bundle.js"
SWAGGER_CSS = f"{VENDOR}/swagger-ui-dist@5.35.0/swagger-ui.css"
REDOC_JS = f"{VENDOR}/redoc@2.5.4/bundles/redoc.standalone.js"

INTEGRITY = {
    SWAGGER_JS: "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
    SWAGGER_CSS: "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
    REDOC_JS: "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5",
}


# Strawberry's page fills the editor from `?q=`; a link with `?query=` (the GET form of a
# GraphQL request) fills it too.
GRAPHIQL_PREFILL = (
    "parameters.q || EXAMPLE_QUERY",
    "parameters.q || parameters.query || EXAMPLE_QUERY",
)


def graphiql(html: str) -> str:
    """Strawberry's GraphiQL page with its unpkg files served from here, its editor
    filled from a link's `?query=` too."""
    return html.replace(UNPKG, VENDOR + "/").replace(*GRAPHIQL_PREFILL)


def swagger_ui(openapi_url: str, title: str) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - Swagger UI",
        swagger_js_url=SWAGGER_JS,
        swagger_css_url=SWAGGER_CSS,
        swagger_favicon_url="/favicon.ico",
    )
    return HTMLResponse(_with_integrity(bytes(page.body).decode()))


def redoc(openapi_url: str, title: str) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{title} - ReDoc",
        redoc_js_url=REDOC_JS,
        redoc_favicon_url="/favicon.ico",
        with_google_fonts=False,
    )
    return HTMLResponse(_with_integrity(bytes(page.body).decode()))


def _with_integrity(html: str) -> str:
    for url, digest in INTEGRITY.items():
        html = html.replace(f'"{url}"', f'"{url}" integrity="{digest}"')
    return html
