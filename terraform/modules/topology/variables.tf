variable "topology" {
  description = "The decoded schemas/pipeline.yaml (yamldecode of the file)."
  type        = any
}
