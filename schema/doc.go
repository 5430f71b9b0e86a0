// Package schema knows what pgjet needs of Postgres catalogs: relations and
// their columns, type names, identity keys, table digests, the DDL capture
// functions and triggers, and the roles and owners a snapshot copies.
// Postgres errors are classified in package pgerr, connection strings
// redacted in package redact.
package schema
