// Package acrapi holds the wire types of Outpost's /acr API, importable by other programs.
package acrapi
