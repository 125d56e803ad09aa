"""Version strings the services report.

They must pass caveclient 8.2.1's version gates (e.g. info >= 4.3.1 for image mirrors) and name
the upstream API level each opencave service implements.
"""

INFO_SERVER_VERSION = "4.3.3"
INFO_API_VERSIONS = [2]
SCHEMA_API_VERSIONS = [2]
AUTH_SERVER_VERSION = "2.30.3"
# PyChunkedGraph level: >= 2.18 enables every caveclient 8.2.1 chunkedgraph feature.
CHUNKEDGRAPH_SERVER_VERSION = "2.21.1"
CHUNKEDGRAPH_API_VERSIONS = [0, 1]
# MaterializationEngine level: >= 5.13.0 passes caveclient 8.2.1's typed-query gate.
MATERIALIZE_SERVER_VERSION = "5.14.0"
MATERIALIZE_API_VERSIONS = [2, 3]
