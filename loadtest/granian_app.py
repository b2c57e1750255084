"""The API's app as a module-level object, for `granian` (loadtest.api_cost --server granian):
a comparison of servers under the same workers, not how the API is deployed."""

from api.app import serve

app = serve()
