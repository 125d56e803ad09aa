"""The schema classes of the EMAnnotationSchemas registry, grouped by family like upstream's modules."""
