"""Data in and out: imports of annotation tables and released versions, mirrors of other CAVE
deployments, and exports of versions in open formats."""
